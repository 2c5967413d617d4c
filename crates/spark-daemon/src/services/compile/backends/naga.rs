//! naga runs in process, on the pool's own threads (at lower CPU priority), so a compile never occupies the
//! runtime or the blocking pool the stores use. A panic in naga is caught and reported as a crash; a job that
//! runs past its timeout is answered with an error and its thread is replaced, so the pool keeps its size.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use spark_compile::{Job, Outcome};
use tokio::sync::oneshot;

type Task = (Job, oneshot::Sender<std::thread::Result<Outcome>>);

/// Threads that run naga jobs.
pub struct NagaThreads {
    tx: Mutex<Sender<Task>>,
    rx: Arc<Mutex<Receiver<Task>>>,
    nice: i32,
}

impl NagaThreads {
    pub fn start(threads: usize, nice: i32) -> NagaThreads {
        let (tx, rx) = channel::<Task>();
        let t = NagaThreads {
            tx: Mutex::new(tx),
            rx: Arc::new(Mutex::new(rx)),
            nice,
        };
        for _ in 0..threads {
            t.spawn_thread();
        }
        t
    }

    /// Adds a thread: at start, and in place of one stuck in a job past its timeout.
    pub fn spawn_thread(&self) {
        let rx = self.rx.clone();
        let nice = self.nice;
        let spawned = std::thread::Builder::new()
            .name("sparkd-compile".into())
            .spawn(move || {
                crate::platform::lower_thread_priority(nice);
                loop {
                    let task = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((job, reply)) = task else { return };
                    let out = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        spark_compile::naga_backend::compile(&job)
                    }));
                    let _ = reply.send(out);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a compile thread: {e}");
        }
    }

    /// Queues `job`; the receiver yields naga's outcome, or the panic payload.
    pub fn submit(&self, job: Job) -> oneshot::Receiver<std::thread::Result<Outcome>> {
        let (reply, rx) = oneshot::channel();
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((job, reply));
        rx
    }
}

/// A panic payload as text.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "naga panicked".into())
}
