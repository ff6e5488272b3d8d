//! A thread of its own at a lower CPU priority, for work nothing waits on
//! in a hurry: renders for people (the status page, the JSON API) and the
//! sampler's cgroup reads. On a busy host a flood of page requests, or a
//! round over thousands of cgroups, then takes only the CPU that applying
//! events and serving scrapes leave over, and its jobs queue behind each
//! other, never in front of a scrape or an event.

use std::sync::mpsc;

use tokio::sync::oneshot;

/// How much lower than the rest of unitwatch a lane's jobs run (nice).
const NICE: libc::c_int = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A handle to the thread; it ends when every handle is gone.
#[derive(Clone, Debug)]
pub struct Lane {
    jobs: mpsc::Sender<Job>,
}

impl Lane {
    /// Starts the thread; `None` (logged) if it cannot be started.
    pub fn start(name: &str) -> Option<Lane> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Linux gives each thread a nice value of its own: this
                // lowers this thread's alone. Raising it is always allowed.
                // SAFETY: setpriority only sets a scheduling parameter of
                // the calling thread (who 0).
                let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
                while let Ok(job) = queue.recv() {
                    job();
                }
            });
        match started {
            Ok(_) => Some(Lane { jobs }),
            Err(e) => {
                tracing::error!(error = %e, thread = name, "cannot start a thread of lower priority; its work runs on the others");
                None
            }
        }
    }

    /// Runs `f` on the lane's thread; `None` if the thread is gone.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.send(job).ok()?;
        rx.await.ok()
    }
}
