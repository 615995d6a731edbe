//! `yizhan manpages DIR` and `yizhan completions SHELL`: the man pages and the shell
//! completions, generated from the same clap definitions that parse the command line, so they
//! never disagree with it (clap_mangen, clap_complete).

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `yizhan completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells completions are made for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    /// bash: install as /usr/share/bash-completion/completions/yizhan.
    Bash,
    /// zsh: install as /usr/share/zsh/vendor-completions/_yizhan.
    Zsh,
    /// fish: install as /usr/share/fish/vendor_completions.d/yizhan.fish.
    Fish,
}

/// `yizhan manpages`.
#[derive(Debug, clap::Args)]
pub struct ManpagesArgs {
    /// The directory to write the pages into (section 1: yizhan.1, yizhan-serve.1, ...,
    /// sendmail.1, mailq.1), created if missing.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Prints the completion script of `shell` for `command` on standard output.
pub fn completions(args: &CompletionsArgs, mut command: clap::Command) -> ExitCode {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command, "yizhan", &mut io::stdout());
    ExitCode::SUCCESS
}

/// Writes a page for `command`, each of its subcommands, and `sendmail` and `mailq`, into the
/// directory; prints each path written.
pub fn manpages(args: &ManpagesArgs, command: clap::Command) -> ExitCode {
    match write_pages(&args.dir, command) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "yizhan: cannot write the man pages into {}: {e}",
                args.dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn write_pages(dir: &Path, command: clap::Command) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut command = command.name("yizhan");
    command.build();
    let mut written = vec![write_page(dir, "yizhan", &command)?];
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("yizhan-{}", sub.get_name());
        let page = sub.clone().name(name.clone());
        written.push(write_page(dir, &name, &page)?);
    }
    written.push(write_page(dir, "sendmail", &sendmail_page())?);
    written.push(write_page(dir, "mailq", &mailq_page())?);
    Ok(written)
}

fn write_page(dir: &Path, name: &str, command: &clap::Command) -> io::Result<PathBuf> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page)?;
    Ok(path)
}

/// sendmail(1) as yizhan reads it (its flags are not clap-shaped; this page lists them).
fn sendmail_page() -> clap::Command {
    clap::Command::new("sendmail")
        .about("Queue a message from standard input with yizhan (sendmail compatibility)")
        .long_about(
            "Reads a message on standard input and queues it with the running yizhan server \
             (root and the server's account drop it into the maildrop even while it is down). \
             Flags: ADDR... recipients; -t take recipients from To:, Cc:, Bcc:; -f ADDR / -r \
             ADDR envelope sender (-f '<>' for the null sender); -F NAME full name for an added \
             From:; -i / -oi a lone dot is data; -C FILE configuration; -bm submit (default); \
             -bp list the queue (as mailq); -bi newaliases; -bv say where each recipient's mail \
             would go, sending nothing; -q / -qINTERVAL flush the queue; -qRDOMAIN flush one \
             domain; --help usage. -o..., -v, -m, -n, -N, -R, -V, -B, -h, -L, -O, -X are \
             accepted and ignored. Exit status: 0, 64 usage, 67 unknown user (-bv), 75 try \
             again (the server is unreachable), 78 configuration.",
        )
        .arg(
            clap::Arg::new("args")
                .value_name("ARGS")
                .num_args(0..)
                .help("flags and recipients, as described above"),
        )
}

/// mailq(1): `yizhan queue list` for root and the server's account, one's own messages for
/// anyone else.
fn mailq_page() -> clap::Command {
    clap::Command::new("mailq")
        .about("List the yizhan mail queue")
        .long_about(
            "Lists the queue of the running yizhan server, oldest first: queue id (! = held), \
             size, arrival, sender, and each pending recipient with its last error. Root and \
             the server's account see every message; other users see the messages they \
             submitted.",
        )
        .arg(
            clap::Arg::new("config")
                .short('C')
                .long("config")
                .value_name("FILE")
                .help("the configuration file"),
        )
}
