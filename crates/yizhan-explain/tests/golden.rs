//! Golden explanations: the seed article's JavaMail capture, reconstructed from the article
//! (`tests/golden/article.txt`), explained in each language and format and compared with the
//! checked-in output. `YIZHAN_BLESS=1 cargo test -p yizhan-explain --test golden` rewrites the
//! expected files after a deliberate change (then read the diff).

use std::path::Path;

use yizhan_explain::render::{Format, render};
use yizhan_explain::{Catalogue, Lang, explain, transcript};

const PASSWORD: &str = "article-password";

fn check(input: &str, lang: Lang, format: Format, expected: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let text = std::fs::read_to_string(dir.join(input)).unwrap();
    let cat = Catalogue::load(lang).unwrap();
    let got = render(&explain(&transcript::parse(&text), &cat), format, &cat);
    // The password, and its base64, appear nowhere in an explanation.
    let b64 = base64_of(PASSWORD);
    assert!(
        !got.contains(PASSWORD) && !got.contains(&b64),
        "a secret leaked: {got}"
    );
    let path = dir.join(expected);
    if std::env::var_os("YIZHAN_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(got, want, "{expected} differs (YIZHAN_BLESS=1 to accept)");
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn the_articles_capture_in_english() {
    check("article.txt", Lang::En, Format::Text, "article.en.txt");
}

#[test]
fn the_articles_capture_in_chinese() {
    check("article.txt", Lang::Zh, Format::Text, "article.zh.txt");
}

#[test]
fn the_articles_capture_as_markdown_and_json() {
    check("article.txt", Lang::En, Format::Markdown, "article.en.md");
    check("article.txt", Lang::Zh, Format::Json, "article.zh.json");
}
