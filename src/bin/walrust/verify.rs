//! `walrust verify URL`.

use crate::{output, Args, Failure};

pub const HELP: &str = "\
Usage: walrust verify URL

Reads every LTX file of the replica and checks its LTX checksum, page index, header, size and
(for files manifest.json names) SHA-256; checks every manifest entry against the store; and
follows the chain of files from each snapshot towards the newest restore point. Prints a JSON
report. Files are streamed, one at a time.

Exit codes: 0 all good, 3 no LTX files at URL, 4 storage error, 5 integrity error (a damaged
file, a manifest mismatch, or a hole in the newest restore point's chain; the report says which).
";

pub fn run(args: &[String]) -> Result<(), Failure> {
    let a = Args::parse(args, &[], &[])?;
    a.expect_positional(&["URL"])?;
    let store = walrust::store::open(&a.positional[0]).map_err(Failure::store)?;
    let report = walrust::compact::verify(store.as_ref())
        .map_err(|e| Failure::new(e.exit_code(), e.to_string()))?;
    if report.files_checked == 0 && report.manifest.missing.is_empty() {
        return Err(Failure::new(
            3,
            format!(
                "walrust: nothing to verify: {} holds no LTX files; check the URL",
                report.replica
            ),
        ));
    }
    output::line(&serde_json::to_string_pretty(&report).expect("reports serialize"))?;
    report
        .into_result()
        .map(|_| ())
        .map_err(|e| Failure::new(e.exit_code(), e.to_string()))
}
