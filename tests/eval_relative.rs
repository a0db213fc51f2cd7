//! `ckpt eval`'s relative table and `ckpt report`'s are one computation: the same
//! deltas and the same paired tests, for a group (MMLU's subjects as one column) and a
//! rolling task (validation loss) too.

mod common;

use common::Sandbox;

#[test]
fn eval_and_report_agree_on_groups_and_rolling_tasks() {
    let sb = Sandbox::new();
    common::wso_and_decayed_runs(sb.path());
    let out = sb.run(["synth", "--eval-tasks", "evaldata", "--eval-docs", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eval = sb.run_json([
        "eval",
        "runs",
        "--tasks",
        "mmlu,validation_loss",
        "--data-dir",
        "evaldata",
        "--limit",
        "3",
        "--num-fewshot",
        "0",
        "--store",
        "s.sqlite",
        "--json",
    ]);
    let rel = &eval["relative"];
    let out = sb.run(["report", "s.sqlite", "--out", "rep", "--format", "csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(sb.path().join("rep/relative_pretraining.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let wso: Vec<&str> = lines
        .find(|l| l.starts_with("wso,"))
        .expect("wso row")
        .split(',')
        .collect();
    let row = rel["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == "wso")
        .expect("wso row");
    for (i, task) in rel["tasks"].as_array().unwrap().iter().enumerate() {
        let cell = &row[2][i];
        let p = cell["test"]["p_value"].as_f64();
        assert!(p.is_some(), "{task}: no paired test in {rel}");
        // The report names a column `TASK METRIC Δ vs BASE` (underscores as spaces),
        // then its p-value.
        let name = task.as_str().unwrap().replace('_', " ");
        let at = header
            .iter()
            .position(|h| h.starts_with(&format!("{name} ")) && h.ends_with("Δ vs wsd"))
            .unwrap_or_else(|| panic!("{name} in {csv}"));
        let (delta, report_p) = (wso[at], wso[at + 1]);
        let close = |a: f64, b: &str| (a - b.parse::<f64>().unwrap()).abs() < 1e-9;
        assert!(
            close(cell["delta"].as_f64().unwrap(), delta),
            "{task}: {csv}"
        );
        assert!(close(p.unwrap(), report_p), "{task}: {csv}");
    }
}
