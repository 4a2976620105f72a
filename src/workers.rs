//! Thread per core: the proxy runs on N worker threads, each a single-threaded tokio runtime.
//!
//! A client session lives on one worker, and every node keeps a share of its backend
//! connections on each worker, so a request, its backend write, the reply and the client write
//! all happen on one thread: no cross-thread wake on the request path (tokio's work-stealing
//! runtime paid about a third more CPU per request for them). Worker 0 is the thread that
//! started the proxy; it also runs the listener, the topology refresher and the admin endpoint.
//! This module must never move a running session, and never block a worker thread.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// The index of the worker this thread runs (0 on any thread that is not a worker).
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the caller.
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// The worker runtimes, by index.
#[derive(Debug)]
pub struct Workers {
    /// Worker 0's runtime (also `handles[0]`).
    zero: Handle,
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Workers over the calling runtime alone (worker 0): what a single thread, tests and
    /// benchmarks use.
    pub fn single() -> Workers {
        Workers {
            zero: Handle::current(),
            handles: vec![Handle::current()],
            next: AtomicUsize::new(0),
            stop: CancellationToken::new(),
            threads: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The calling runtime as worker 0 plus `n - 1` worker threads of their own.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut handles = vec![Handle::current()];
        let mut threads = Vec::new();
        let stop = CancellationToken::new();
        for index in 1..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("slotgate-worker-{index}"))
                    .spawn(move || {
                        CURRENT.with(|c| c.set(index));
                        // Tasks spawned on this runtime run while it is blocked on here.
                        runtime.block_on(stop.cancelled());
                    })?,
            );
        }
        Ok(Workers {
            zero: Handle::current(),
            handles,
            next: AtomicUsize::new(0),
            stop,
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The runtime of worker `index` (worker 0's if there is no such worker).
    pub fn handle(&self, index: usize) -> &Handle {
        self.handles.get(index).unwrap_or(&self.zero)
    }

    /// The worker for the next client, in turn.
    pub fn next_worker(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.len().max(1)
    }

    /// Runs `fut` on worker `index`.
    pub fn spawn_on<F>(&self, index: usize, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle(index).spawn(fut)
    }

    /// Stops the worker threads (their remaining tasks are dropped) and waits for them.
    pub fn stop(&self) {
        self.stop.cancel();
        let threads = match self.threads.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for t in threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_run_tasks_on_their_own_worker_thread() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let workers = Workers::start(3).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(workers.len(), 3);
            for w in 0..3 {
                let seen = workers
                    .spawn_on(w, async { current() })
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(seen, w);
            }
            let turns: Vec<usize> = (0..4).map(|_| workers.next_worker()).collect();
            assert_eq!(turns, [0, 1, 2, 0]);
            workers.stop();
        });
    }
}
