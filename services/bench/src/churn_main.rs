//! `onejourney-churn-eval`: the learned churn model's prequential AUC on the
//! harder simulator, next to the hand-weighted score, recency alone and
//! BG/NBD, as JSON (`make churn-eval`).

use anyhow::Context as _;
use clap::Parser;
use onejourney_bench::churn::{evaluate, ChurnEvalArgs};
use onejourney_engine::config::Settings;

#[derive(Parser)]
#[command(
    name = "onejourney-churn-eval",
    about = "Churn models compared on the harder simulator"
)]
struct Args {
    #[arg(long, default_value_t = 3000)]
    customers: usize,
    #[arg(long, default_value_t = 365)]
    days: u32,
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// No activity for this many days after a check: churned.
    #[arg(long, default_value_t = 42)]
    horizon_days: u32,
    #[arg(long, default_value_t = 7)]
    check_days: u32,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let settings = Settings::defaults().context("default settings")?;
    let eval = evaluate(
        &settings,
        &ChurnEvalArgs {
            customers: a.customers,
            days: a.days,
            seed: a.seed,
            horizon_days: a.horizon_days,
            check_days: a.check_days,
        },
    )?;
    println!("{}", serde_json::to_string_pretty(&eval)?);
    Ok(())
}
