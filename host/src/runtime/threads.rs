//! Guest threads: the OS threads invocations run on. Every running invocation has a thread of its
//! own, so a guest that blocks or spins until its deadline holds only that thread.
//!
//! Why not tokio's blocking pool: it hands every task over through one mutex and condvar shared by
//! all its threads. At 12,000 invocations/s on 2 cores that hand-over (a condvar wake-up, then
//! every woken thread contending for the mutex) took about 15% of the CPU (profile in
//! BENCHMARKS.md). Here an idle thread waits on its own parker; a dispatch pops the most recently
//! idled thread (its caches are warm, and it may not even have parked yet), puts the job in that
//! thread's slot and unparks it: one short uncontended lock and at most one futex wake.
//!
//! Bounds: at most [`MAX_THREADS`] threads (concurrent invocations are bounded anyway by the
//! workers of each pool and the engine's instance pool; past the bound a job runs on tokio's
//! blocking pool instead). An idle thread exits after [`IDLE_KEEP`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// Most guest threads alive at once.
pub const MAX_THREADS: usize = 1024;
/// How long a thread stays idle before it exits.
pub const IDLE_KEEP: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Slot {
    job: Mutex<Option<Job>>,
    thread: std::thread::Thread,
}

struct Pool {
    /// Idle threads, the most recently idled last.
    idle: Mutex<Vec<Arc<Slot>>>,
    alive: AtomicUsize,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| Pool {
    idle: Mutex::new(Vec::new()),
    alive: AtomicUsize::new(0),
});

/// Runs `f` on a guest thread and returns its result, or the panic's message.
pub async fn run<T, F>(f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let result = catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p));
        let _ = tx.send(result);
    });
    if let Some(job) = POOL.dispatch(job) {
        // At the bound: the blocking pool queues what no thread of ours can take.
        tokio::task::spawn_blocking(job);
    }
    rx.await
        .unwrap_or_else(|_| Err("the guest thread stopped".into()))
}

impl Pool {
    /// Hands `job` to an idle thread or a new one; gives it back when at [`MAX_THREADS`].
    fn dispatch(&'static self, job: Job) -> Option<Job> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(slot) = idle {
            *slot.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(job);
            slot.thread.unpark();
            return None;
        }
        if self.alive.fetch_add(1, Ordering::SeqCst) >= MAX_THREADS {
            self.alive.fetch_sub(1, Ordering::SeqCst);
            return Some(job);
        }
        let spawned = std::thread::Builder::new()
            .name("levee-guest".into())
            .spawn(move || self.serve(job));
        match spawned {
            Ok(_) => None,
            Err(e) => {
                self.alive.fetch_sub(1, Ordering::SeqCst);
                // The job was dropped with the closure: its caller gets an error, not a hang.
                tracing::warn!("could not start a guest thread: {e}");
                None
            }
        }
    }

    /// A guest thread's life: run the job, go idle, wait for the next one or retire.
    fn serve(&'static self, first: Job) {
        let slot = Arc::new(Slot {
            job: Mutex::new(None),
            thread: std::thread::current(),
        });
        let mut job = first;
        loop {
            job();
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(slot.clone());
            match self.next(&slot) {
                Some(next) => job = next,
                None => break,
            }
        }
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits for the job a dispatcher puts in `slot`; `None` after [`IDLE_KEEP`] without one
    /// (having left the idle list, so no dispatcher can pick this thread any more).
    fn next(&self, slot: &Arc<Slot>) -> Option<Job> {
        let deadline = std::time::Instant::now() + IDLE_KEEP;
        loop {
            if let Some(job) = slot.job.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Some(job);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = idle.iter().position(|s| Arc::ptr_eq(s, slot)) {
                    idle.swap_remove(i);
                    return None;
                }
                // A dispatcher took this thread: its job is on the way.
                drop(idle);
                std::thread::park();
                continue;
            }
            std::thread::park_timeout(deadline - now);
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_runtime_and_return_their_results() {
        let here = std::thread::current().id();
        let (id, name) = run(|| {
            let t = std::thread::current();
            (t.id(), t.name().map(str::to_string))
        })
        .await
        .unwrap();
        assert_ne!(id, here);
        assert_eq!(name.as_deref(), Some("levee-guest"));
    }

    #[tokio::test]
    async fn a_panicking_job_reports_its_message_and_the_thread_goes_on() {
        let e = run(|| -> u32 { panic!("guest host bug") })
            .await
            .unwrap_err();
        assert!(e.contains("guest host bug"), "{e}");
        assert_eq!(run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_job_does_not_hold_up_the_others() {
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let stuck = tokio::spawn(run(move || blocked.recv().is_ok()));
        let others: Vec<_> = (0..64u32)
            .map(|i| tokio::spawn(run(move || i * 2)))
            .collect();
        let mut sum = 0;
        for o in others {
            sum += o.await.unwrap().unwrap();
        }
        assert_eq!(sum, (0..64u32).map(|i| i * 2).sum::<u32>());
        release.send(()).unwrap();
        assert!(stuck.await.unwrap().unwrap());
    }
}
