//! Paragraph runs: a FIFO queue on the loop side and one job thread that
//! runs the interpreters, so a slow query never stalls the event loop.
//! The job thread hands results back through the server's `Notifier`.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::interpreter::{Interpreters, SqlCancel};
use super::model::Results;
use crate::handler::ConnectionId;
use crate::server::Notifier;

/// A paragraph waiting for, or in, its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The note holding the paragraph.
    pub note_id: String,
    /// The paragraph to run.
    pub paragraph_id: String,
    /// Who asked: receives the PARAGRAPH updates even if not bound.
    pub requester: ConnectionId,
    /// The request's msgId, echoed on the updates (after a cancel, the
    /// cancel's).
    pub msg_id: Option<String>,
    /// Who cancelled it: receives the ABORT even if not bound.
    pub canceller: Option<ConnectionId>,
    /// RUN_ALL_PARAGRAPHS: the paragraphs to run after this one succeeds.
    pub then: Vec<String>,
}

impl Job {
    /// Makes the coming ABORT the answer to a cancel from `canceller`.
    fn answer_cancel(&mut self, canceller: Option<ConnectionId>, msg_id: Option<&str>) {
        self.canceller = canceller;
        self.msg_id = msg_id.map(str::to_owned);
    }
}

struct Work {
    text: String,
    default_group: String,
}

/// A finished run, as reported by the job thread.
#[derive(Debug)]
pub struct Finished {
    /// The job that ran.
    pub job: Job,
    /// Its results.
    pub results: Results,
    /// CANCEL_PARAGRAPH arrived while it ran.
    pub cancelled: bool,
}

/// The queue and the job thread.
pub struct Jobs {
    queue: VecDeque<Job>,
    running: Option<(Job, bool)>,
    to_thread: Option<mpsc::Sender<Work>>,
    from_thread: mpsc::Receiver<Results>,
    results_sender: mpsc::Sender<Results>,
    interpreters: Option<Interpreters>,
    sql_cancel: SqlCancel,
    thread: Option<JoinHandle<()>>,
}

impl Jobs {
    /// Jobs run by `interpreters` once [`Jobs::start`] is called.
    pub fn new(interpreters: Interpreters, sql_cancel: SqlCancel) -> Jobs {
        let (results_sender, from_thread) = mpsc::channel();
        Jobs {
            queue: VecDeque::new(),
            running: None,
            to_thread: None,
            from_thread,
            results_sender,
            interpreters: Some(interpreters),
            sql_cancel,
            thread: None,
        }
    }

    /// Starts the job thread; it notifies the loop after each run.
    pub fn start(&mut self, notifier: Notifier) {
        let Some(mut interpreters) = self.interpreters.take() else {
            return;
        };
        let (to_thread, work) = mpsc::channel::<Work>();
        let results = self.results_sender.clone();
        let spawned = std::thread::Builder::new()
            .name("wsloop-jobs".to_owned())
            .spawn(move || {
                while let Ok(work) = work.recv() {
                    let outcome = interpreters.run(&work.text, &work.default_group);
                    if results.send(outcome).is_err() {
                        break;
                    }
                    if let Err(error) = notifier.notify() {
                        log::warn!("job thread cannot wake the loop: {error}");
                    }
                }
            });
        match spawned {
            Ok(thread) => {
                self.thread = Some(thread);
                self.to_thread = Some(to_thread);
            }
            Err(error) => log::error!("cannot start the job thread: {error}"),
        }
    }

    /// Queues a job behind the others.
    pub fn enqueue(&mut self, job: Job) {
        self.queue.push_back(job);
    }

    /// If nothing runs, takes the next queued job for [`Jobs::dispatch`].
    pub fn next_to_run(&mut self) -> Option<Job> {
        if self.running.is_some() {
            return None;
        }
        self.queue.pop_front()
    }

    /// Hands a job's text to the job thread; gives the job back if the
    /// thread is not available.
    pub fn dispatch(&mut self, job: Job, text: String, default_group: String) -> Result<(), Job> {
        let Some(sender) = self.to_thread.as_ref() else {
            return Err(job);
        };
        if sender
            .send(Work {
                text,
                default_group,
            })
            .is_err()
        {
            return Err(job);
        }
        self.running = Some((job, false));
        Ok(())
    }

    /// Collects a finished run, if the job thread produced one.
    pub fn take_finished(&mut self) -> Option<Finished> {
        let results = self.from_thread.try_recv().ok()?;
        let (job, cancelled) = self.running.take()?;
        Some(Finished {
            job,
            results,
            cancelled,
        })
    }

    /// Cancels a paragraph: a queued one is removed and returned (it becomes
    /// ABORT); a running one is interrupted (its result will say cancelled).
    /// Either way the ABORT answers the cancel: it carries `msg_id` and
    /// goes to `canceller` too.
    pub fn cancel(
        &mut self,
        paragraph_id: &str,
        canceller: Option<ConnectionId>,
        msg_id: Option<&str>,
    ) -> Option<Job> {
        if let Some(position) = self
            .queue
            .iter()
            .position(|j| j.paragraph_id == paragraph_id)
        {
            let mut job = self.queue.remove(position)?;
            job.answer_cancel(canceller, msg_id);
            return Some(job);
        }
        if let Some((job, cancelled)) = self.running.as_mut()
            && job.paragraph_id == paragraph_id
        {
            *cancelled = true;
            job.answer_cancel(canceller, msg_id);
            self.sql_cancel.cancel();
        }
        None
    }

    /// Drops queued jobs of a note (deleted) and cancels its running one.
    pub fn forget_note(&mut self, note_id: &str) {
        self.queue.retain(|j| j.note_id != note_id);
        if let Some((job, cancelled)) = self.running.as_mut()
            && job.note_id == note_id
        {
            *cancelled = true;
            self.sql_cancel.cancel();
        }
    }

    /// Whether `paragraph_id` is queued or running.
    pub fn is_active(&self, paragraph_id: &str) -> bool {
        self.queue.iter().any(|j| j.paragraph_id == paragraph_id)
            || self
                .running
                .as_ref()
                .is_some_and(|(j, _)| j.paragraph_id == paragraph_id)
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        self.sql_cancel.cancel();
        self.to_thread = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
