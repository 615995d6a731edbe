//! The validator of `[record]`: which clients' sessions are recorded, and how much is kept.

use yizhan_server::record::RecordSettings;
use yizhan_server::settings::Settings;

use super::check::Validator;
use super::raw::RawConfig;

/// The smallest recording worth keeping: a greeting, EHLO and its reply.
const MIN_SESSION_BYTES: u64 = 4096;

impl RawConfig {
    pub(super) fn record(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.record;
        let default = RecordSettings::default();
        let record = &mut settings.record;
        if let Some(networks) = v.networks("record.networks", raw.networks.as_ref()) {
            record.networks = networks;
        }
        record.max_session_bytes = v.size(
            "record.max_session_bytes",
            &raw.max_session_bytes,
            MIN_SESSION_BYTES,
            default.max_session_bytes,
        );
        record.keep = v.integer(
            "record.keep",
            &raw.keep,
            1,
            " (recordings kept)",
            default.keep,
        );
        record.keep_for = v.duration("record.keep_for", &raw.keep_for, true, default.keep_for);
        if let Some(bodies) = raw.bodies {
            record.bodies = bodies;
        }
    }
}
