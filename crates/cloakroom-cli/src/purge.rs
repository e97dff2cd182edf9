//! `purge`: expired sessions out, a batch at a time, with a progress bar and a clean stop on
//! Ctrl-C.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::cli::StoreArg;
use crate::sessions::positive;
use crate::store::{now, one_line, open_existing, runtime};
use crate::Failure;

pub(crate) fn purge(store: &StoreArg, batch: u64, json: bool) -> Result<(), Failure> {
    let batch = positive(batch, "--batch")?;
    let rt = runtime()?;
    rt.block_on(async {
        let s = open_existing(&store.url).await?;
        // Everything that expired before this moment goes; what expires while the purge
        // runs is left for the next one, so the count asked for below is the work to do.
        let now = now()?;
        let total = s.stats(now).await.ok().map(|st| st.expired_not_purged);

        // Ctrl-C sets a flag the loop reads between batches: a batch in flight always
        // finishes (it is one transaction or one round trip), and nothing is cut half-way.
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| anyhow!("cannot catch Ctrl-C: {e}"))?;
        tokio::spawn(async move {
            if signal.recv().await.is_some() {
                flag.store(true, Ordering::SeqCst);
            }
        });

        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{spinner} purging [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} \
                     ({per_sec}, {eta} left)",
                )
                .map_err(|e| anyhow!("{e}"))?,
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(
                    "{spinner} purging [{elapsed_precise}] {human_pos} removed ({per_sec})",
                )
                .map_err(|e| anyhow!("{e}"))?,
            ),
        };
        let terminal = std::io::stderr().is_terminal();
        bar.set_draw_target(if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        bar.enable_steady_tick(Duration::from_millis(200));
        if !terminal {
            // Scripts (and tests) learn here that Ctrl-C is now a clean stop.
            eprintln!(
                "purging sessions expired before {now} in batches of {batch}{} \
                 (Ctrl-C stops after the current batch)",
                total.map_or(String::new(), |t| format!(", {t} to go"))
            );
        }

        let started = Instant::now();
        let mut purged: u64 = 0;
        let mut interrupted = false;
        loop {
            if stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let n = match s.purge_expired(now, batch).await {
                Ok(n) => n,
                Err(e) => {
                    bar.abandon();
                    return Err(Failure::Usage(anyhow!(
                        "purging stopped after {purged} sessions: {}",
                        one_line(&e)
                    )));
                }
            };
            purged += n as u64;
            if bar.length().is_some_and(|len| purged > len) {
                bar.set_length(purged);
            }
            bar.set_position(purged);
            if n < batch {
                break;
            }
        }
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        if json {
            let out = json!({
                "purged": purged,
                "seconds": (seconds * 1000.0).round() / 1000.0,
                "interrupted": interrupted,
            });
            println!("{}", serde_json::to_string(&out)?);
        } else {
            let rate = if seconds > 0.0 {
                format!(", {:.0}/s", purged as f64 / seconds)
            } else {
                String::new()
            };
            let how = if interrupted { "interrupted: " } else { "" };
            println!("{how}purged {purged} expired sessions in {seconds:.2} s{rate}");
        }
        if interrupted {
            return Err(Failure::Interrupted);
        }
        Ok(())
    })
}
