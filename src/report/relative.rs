//! The paper's relative tables (`crate::eval::relative`): each pre-training run's final
//! checkpoint minus the best decayed run's, and each base's picked SFT run minus the
//! picked SFT run of the best decayed base, per task, with the paired test of the two
//! on the same items (McNemar for 0/1 items, paired t otherwise).

use super::inputs::Inputs;
use super::table::{Cell, Table};
use super::tables::{column_name, style_of};
use crate::error::Result;
use crate::eval::headline::Headline;
use crate::eval::relative::{relative_table, RelativeTable, RunFinal};

/// The significance legend under every relative table.
const LEGEND: &str = "Cells: difference from the baseline (points for accuracies and win \
rates), then the paired test's p-value on the same items (McNemar's exact test for 0/1 \
items, paired t otherwise; judged tasks: per-instruction preferences); * p < 0.05, \
** p < 0.01, *** p < 0.001.";

/// Pre-training: each run's (and merge's) final checkpoint against the best decayed run
/// (per task), or `--baseline`. `None` when there is nothing to compare with.
pub(crate) fn pretraining(inp: &Inputs) -> Result<Option<Table>> {
    let finals: Vec<RunFinal> = inp
        .pre_runs()
        .map(|r| {
            let c = r.final_ckpt(&inp.view);
            RunFinal::new(
                &r.name,
                &r.label,
                &c.row.fingerprint,
                r.decayed,
                &c.metrics,
                &inp.pre_columns,
            )
        })
        .collect();
    let table = compare(inp, &finals, &inp.pre_columns)?;
    Ok(table.map(|rel| {
        to_table(
            "relative_pretraining",
            "Pre-training: difference from the best decayed schedule",
            &rel,
            &inp.pre_columns,
            inp.opts.baseline.as_deref(),
        )
    }))
}

/// After SFT: each base's picked SFT run against the picked SFT run of the best
/// decayed base (per task), or of `--baseline`'s base.
pub(crate) fn after_sft(inp: &Inputs) -> Result<Option<Table>> {
    let columns: Vec<Headline> = inp
        .sft_columns
        .judged
        .iter()
        .chain(&inp.sft_columns.tasks)
        .cloned()
        .collect();
    let finals: Vec<RunFinal> = inp
        .picks
        .iter()
        .filter_map(|p| {
            let c = inp.view.by_fingerprint(&p.fingerprint)?;
            let lr = p.lr.map(|lr| format!(", LR {lr:e}")).unwrap_or_default();
            let label = format!("{} → {}{lr}", p.base_label, p.run);
            Some(RunFinal::new(
                &p.base_run,
                &label,
                &p.fingerprint,
                p.base_decayed,
                &c.metrics,
                &columns,
            ))
        })
        .collect();
    let table = compare(inp, &finals, &columns)?;
    Ok(table.map(|rel| {
        let mut t = to_table(
            "relative_sft",
            "After SFT: difference from the best decayed schedule's fine-tune",
            &rel,
            &columns,
            inp.opts.baseline.as_deref(),
        );
        t.notes.insert(
            0,
            "Each base model's picked SFT run (see the sweep); rows are named by base run.".into(),
        );
        t
    }))
}

fn compare(
    inp: &Inputs,
    finals: &[RunFinal],
    columns: &[Headline],
) -> Result<Option<RelativeTable>> {
    let tasks: Vec<String> = columns.iter().map(|h| h.task.clone()).collect();
    let items = |fp: &str, task: &str| -> Result<Vec<(usize, f64)>> {
        match columns.iter().find(|h| h.task == task) {
            Some(h) => inp.items(fp, h),
            None => Ok(vec![]),
        }
    };
    relative_table(finals, &tasks, inp.opts.baseline.as_deref(), &items)
}

fn to_table(
    id: &str,
    title: &str,
    rel: &RelativeTable,
    columns: &[Headline],
    chosen: Option<&str>,
) -> Table {
    let mut names = vec!["run".to_string(), "schedule".into()];
    names.extend(columns.iter().zip(&rel.baselines).map(|(h, b)| match b {
        Some(b) => format!("{} Δ vs {b}", column_name(h)),
        None => format!("{} Δ", column_name(h)),
    }));
    let mut t = Table::new(id, title, names);
    t.notes.push(match chosen {
        Some(b) => format!("Baseline: {b} (--baseline)."),
        None => "Baseline: per task, the best decayed run (a WSM merge counts as decayed).".into(),
    });
    t.notes.push(LEGEND.into());
    for (run, label, cells) in &rel.rows {
        let mut row = vec![Cell::text(run), Cell::text(label)];
        row.extend(cells.iter().zip(columns).map(|(c, h)| match c {
            Some(c) => Cell::Delta {
                delta: c.delta,
                test: c.test,
                style: style_of(&h.metric),
            },
            None => Cell::Empty,
        }));
        t.rows.push(row);
    }
    t
}
