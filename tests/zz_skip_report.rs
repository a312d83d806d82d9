//! The closing summary of a `cargo test` run: the artifacts tests kept (screenshots of the
//! login and consent pages, `common::external::keep_artifact`), and how many tests skipped
//! because an external program (nginx, Caddy, Traefik, node, npm, openssl) is missing. Cargo runs test targets in
//! name order, so this one (`harness = false`) runs after every other integration test of the
//! same run and reads what they recorded (`common::external::skip`). Under `CI=true` nothing
//! skips: a missing program fails its test instead.

#[allow(dead_code)]
#[path = "common/external.rs"]
mod external;

use std::collections::BTreeMap;

fn main() {
    report_artifacts();
    report_skips();
}

fn report_artifacts() {
    let record = external::artifact_record_file();
    let recorded = std::fs::read_to_string(&record).unwrap_or_default();
    let _ = std::fs::remove_file(&record);
    let kept: Vec<&str> = recorded.lines().filter(|l| !l.is_empty()).collect();
    if kept.is_empty() {
        return;
    }
    println!("test artifacts kept ({}):", kept.len());
    for path in kept {
        println!("  {path}");
    }
}

fn report_skips() {
    let record = external::skip_record_file();
    let recorded = std::fs::read_to_string(&record).unwrap_or_default();
    let _ = std::fs::remove_file(&record);
    let skips: Vec<(&str, &str)> = recorded
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .collect();
    if skips.is_empty() {
        println!("skip report: no test was skipped for a missing external program");
        return;
    }
    let mut by_program: BTreeMap<&str, usize> = BTreeMap::new();
    for (program, _) in &skips {
        *by_program.entry(program).or_default() += 1;
    }
    let programs: Vec<String> = by_program
        .iter()
        .map(|(program, count)| format!("{program}: {count}"))
        .collect();
    println!();
    println!(
        "!!!!! skip report: {} tests SKIPPED, not passed ({}) — install what they need (.ci/run \
         shows how) or run with CI=true to make them fail !!!!!",
        skips.len(),
        programs.join(", ")
    );
    for (program, test) in skips {
        println!("  skipped ({program} missing): {test}");
    }
    println!();
}
