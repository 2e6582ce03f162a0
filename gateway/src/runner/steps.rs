//! Generative backends ([`infergate_backends::Generate`]) are driven step by
//! step (continuous batching): whenever a lane finishes a decoding step, the
//! scheduler chooses the queued jobs that join its running set within the
//! lane's free slots and KV budget, and the next step starts at once.

use std::sync::Arc;
use std::time::Duration;

use infergate_backends::{Item, StepReport};
use infergate_otel::names::spans;
use infergate_otel::propagation;
use infergate_scheduler::StepBudget;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::core::Core;

/// One running set of a generative backend, as its last step left it.
#[derive(Debug, Clone, Copy, Default)]
struct Lane {
    stepping: bool,
    running: usize,
    reserved: usize,
}

/// Drive a generative model until its handle is gone and its queue and
/// lanes have drained.
pub(super) async fn run(core: Arc<Core>) {
    let Some(generator) = core.backend.generator() else { return };
    let mut lanes = vec![Lane::default(); generator.lanes().max(1)];
    let (steps_tx, mut steps_rx) = mpsc::unbounded_channel::<(usize, StepReport)>();
    loop {
        for (index, lane) in lanes.iter_mut().enumerate() {
            if !lane.stepping {
                lane.stepping = start_step(&core, index, *lane, &steps_tx);
            }
        }
        {
            let mut state = core.lock();
            core.publish_depth(&mut state);
            if lanes.iter().all(|l| !l.stepping) && core.finished(&state) {
                break;
            }
        }
        tokio::select! {
            () = core.wake.notified() => {}
            Some((lane, report)) = steps_rx.recv() => {
                lanes[lane] = Lane { stepping: false, running: report.running, reserved: report.reserved };
                stepped(&core, &report);
                publish_lanes(&core, &lanes, generator.kv_budget());
            }
        }
    }
}

/// Start `lane`'s next step if it has sequences running or jobs can join;
/// returns whether a step started.
fn start_step(
    core: &Core,
    lane: usize,
    state: Lane,
    done: &mpsc::UnboundedSender<(usize, StepReport)>,
) -> bool {
    let Some(generator) = core.backend.generator() else { return false };
    let slots = generator.max_sequences().saturating_sub(state.running);
    // An empty lane takes any job, however large, so none waits forever.
    let tokens = if state.running == 0 {
        f64::INFINITY
    } else {
        generator.kv_budget().saturating_sub(state.reserved) as f64 * core.cost_factor
    };
    let mut joining = Vec::new();
    if slots > 0 {
        let mut locked = core.lock();
        if !locked.scheduler.is_empty() {
            let admission =
                locked.scheduler.admit_step(std::time::Instant::now(), StepBudget { slots, tokens });
            drop(locked);
            admission.dropped.into_iter().for_each(|d| core.dropped(d));
            joining = admission.admitted;
        }
    }
    if joining.is_empty() && state.running == 0 {
        return false;
    }
    let size = state.running + joining.len();
    let span = (!joining.is_empty()).then(|| {
        let span = tracing::info_span!(
            parent: None,
            spans::BATCH,
            model = %core.name,
            batch.id = joining[0].1.batch_id,
            batch.size = size,
            batch.joined = joining.len(),
            batch.lane = lane,
            batch.cost = joining.iter().map(|(j, _)| j.cost).sum::<f64>(),
        );
        for (job, _) in &joining {
            propagation::link(&span, &job.payload.span);
        }
        span
    });
    let items: Vec<Item> = joining
        .into_iter()
        .filter_map(|(job, mut decision)| {
            decision.batch_size = size;
            core.hand_over(job, decision)
        })
        .collect();
    let backend = core.backend.clone();
    let done = done.clone();
    let platform = core.platform;
    tokio::spawn(async move {
        let step = async {
            match backend.generator() {
                Some(generator) => generator.step(lane, items).await,
                None => StepReport {
                    running: 0,
                    reserved: 0,
                    tokens: 0,
                    sequences: 0,
                    elapsed: Duration::ZERO,
                    prefill: Duration::ZERO,
                },
            }
        };
        // Only steps that admit jobs are traced: the rest are counted.
        let report = match &span {
            Some(span) => {
                let execute = tracing::info_span!(
                    parent: span,
                    spans::BACKEND_EXECUTE,
                    backend.kind = %platform,
                    batch.size = size,
                );
                step.instrument(execute).await
            }
            None => step.await,
        };
        drop(span);
        let _ = done.send((lane, report));
    });
    true
}

/// The sequences running in every lane, and the share of the lanes' KV
/// budget they hold, as the inference extension's gauges.
fn publish_lanes(core: &Core, lanes: &[Lane], kv_budget: usize) {
    let running: usize = lanes.iter().map(|l| l.running).sum();
    let reserved: usize = lanes.iter().map(|l| l.reserved).sum();
    let budget = (kv_budget * lanes.len()).max(1);
    core.series.pool.running.set(running as i64);
    core.series.pool.utilization.set((reserved as f64 / budget as f64).min(1.0));
}

/// Learn from a finished step.
fn stepped(core: &Core, report: &StepReport) {
    core.series.backend_duration.observe(report.elapsed.as_secs_f64());
    if report.sequences > 0 {
        core.series.batch_size.observe(report.sequences as f64);
        core.lock().scheduler.observe_step(report.tokens as f64, report.sequences, report.elapsed);
    }
}
