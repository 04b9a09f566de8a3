//! Paragraph runs: a FIFO queue on the loop side and one job thread that
//! runs the interpreters, so a slow query never stalls the event loop.
//! The job thread hands results back through the server's `Notifier`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
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

/// [`RunState`]: no run dispatched, or the last one ended.
const IDLE: u8 = 0;
/// [`RunState`]: a run is dispatched and may still be cancelled.
const RUNNING: u8 = 1;
/// [`RunState`]: the loop cancelled the run before it ended.
const CANCELLED: u8 = 2;

/// Where the dispatched run stands, shared by the loop (which cancels) and
/// the job thread (which ends runs). Whichever side moves it away from
/// `RUNNING` first decides the outcome, so a cancel arriving after a run
/// ended, but before the loop collected its result, cannot turn a FINISHED
/// run into ABORT.
type RunState = Arc<AtomicU8>;

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
    /// A cancel (CANCEL_PARAGRAPH, or its note deleted) took effect
    /// before the run ended.
    pub cancelled: bool,
}

/// The queue and the job thread.
pub struct Jobs {
    queue: VecDeque<Job>,
    running: Option<Job>,
    run_state: RunState,
    to_thread: Option<mpsc::Sender<Work>>,
    from_thread: mpsc::Receiver<(Results, bool)>,
    results_sender: mpsc::Sender<(Results, bool)>,
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
            run_state: Arc::new(AtomicU8::new(IDLE)),
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
        let run_state = Arc::clone(&self.run_state);
        let spawned = std::thread::Builder::new()
            .name("wsloop-jobs".to_owned())
            .spawn(move || {
                while let Ok(work) = work.recv() {
                    let outcome = interpreters.run(&work.text, &work.default_group);
                    let cancelled = run_state.swap(IDLE, Ordering::SeqCst) == CANCELLED;
                    if results.send((outcome, cancelled)).is_err() {
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
        self.run_state.store(RUNNING, Ordering::SeqCst);
        if sender
            .send(Work {
                text,
                default_group,
            })
            .is_err()
        {
            self.run_state.store(IDLE, Ordering::SeqCst);
            return Err(job);
        }
        self.running = Some(job);
        Ok(())
    }

    /// Collects a finished run, if the job thread produced one.
    pub fn take_finished(&mut self) -> Option<Finished> {
        let (results, cancelled) = self.from_thread.try_recv().ok()?;
        let job = self.running.take()?;
        Some(Finished {
            job,
            results,
            cancelled,
        })
    }

    /// Cancels a paragraph: a queued one is removed and returned (it becomes
    /// ABORT); a running one is interrupted (its result will say cancelled).
    /// Either way the ABORT answers the cancel: it carries `msg_id` and
    /// goes to `canceller` too. A run that already ended keeps its outcome,
    /// which `canceller` then receives with the run's own msgId.
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
        if let Some(job) = self.running.as_mut()
            && job.paragraph_id == paragraph_id
        {
            if self
                .run_state
                .compare_exchange(RUNNING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                job.answer_cancel(canceller, msg_id);
                self.sql_cancel.cancel();
            } else {
                job.canceller = canceller;
            }
        }
        None
    }

    /// Drops queued jobs of a note (deleted) and cancels its running one.
    pub fn forget_note(&mut self, note_id: &str) {
        self.queue.retain(|j| j.note_id != note_id);
        if self
            .running
            .as_ref()
            .is_some_and(|job| job.note_id == note_id)
            && self
                .run_state
                .compare_exchange(RUNNING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.sql_cancel.cancel();
        }
    }

    /// Whether `paragraph_id` is queued or running.
    pub fn is_active(&self, paragraph_id: &str) -> bool {
        self.queue.iter().any(|j| j.paragraph_id == paragraph_id)
            || self
                .running
                .as_ref()
                .is_some_and(|j| j.paragraph_id == paragraph_id)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::interpreter::Interpreter;
    use crate::notebook::model::ResultMessage;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    /// Runs `%md` paragraphs only when the test lets it, one per gate.
    struct Gated(mpsc::Receiver<()>);

    impl Interpreter for Gated {
        fn name(&self) -> &'static str {
            "md"
        }
        fn run(&mut self, script: &str) -> Results {
            let _ = self.0.recv();
            Results {
                code: "SUCCESS".to_owned(),
                msg: vec![ResultMessage::text(script)],
            }
        }
    }

    fn started() -> (Jobs, mpsc::Sender<()>, Notifier, mio::Poll) {
        let (gate, gated) = mpsc::channel();
        let mut jobs = Jobs::new(
            Interpreters::new(vec![Box::new(Gated(gated))]),
            SqlCancel::default(),
        );
        let poll = mio::Poll::new().unwrap();
        let notifier = Notifier {
            pending: Arc::new(AtomicBool::new(false)),
            waker: Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap()),
        };
        jobs.start(notifier.clone());
        (jobs, gate, notifier, poll)
    }

    fn job(paragraph_id: &str, msg_id: &str) -> Job {
        Job {
            note_id: "n1".to_owned(),
            paragraph_id: paragraph_id.to_owned(),
            requester: ConnectionId {
                index: 1,
                generation: 0,
            },
            msg_id: Some(msg_id.to_owned()),
            canceller: None,
            then: Vec::new(),
        }
    }

    /// Waits (bounded) until the job thread reported a run.
    fn wait_for_report(notifier: &Notifier) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !notifier.take_pending() {
            assert!(Instant::now() < deadline, "the job thread reported nothing");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_cancel_after_the_run_ended_leaves_its_outcome() {
        let (mut jobs, gate, notifier, _poll) = started();
        jobs.dispatch(job("p1", "run"), "%md done".to_owned(), "md".to_owned())
            .unwrap();
        gate.send(()).unwrap();
        wait_for_report(&notifier);
        // The run ended, but the loop has not collected it yet.
        let canceller = ConnectionId {
            index: 2,
            generation: 0,
        };
        assert_eq!(jobs.cancel("p1", Some(canceller), Some("cancel")), None);
        let finished = jobs.take_finished().expect("the run's result");
        assert!(
            !finished.cancelled,
            "a late cancel turned the run into ABORT"
        );
        assert_eq!(finished.results.code, "SUCCESS");
        assert_eq!(finished.job.msg_id.as_deref(), Some("run"));
        assert_eq!(finished.job.canceller, Some(canceller));
    }

    #[test]
    fn a_cancel_during_the_run_makes_it_cancelled() {
        let (mut jobs, gate, notifier, _poll) = started();
        jobs.dispatch(job("p1", "run"), "%md slow".to_owned(), "md".to_owned())
            .unwrap();
        let canceller = ConnectionId {
            index: 2,
            generation: 0,
        };
        assert_eq!(jobs.cancel("p1", Some(canceller), Some("cancel")), None);
        gate.send(()).unwrap();
        wait_for_report(&notifier);
        let finished = jobs.take_finished().expect("the run's result");
        assert!(finished.cancelled);
        assert_eq!(finished.job.msg_id.as_deref(), Some("cancel"));
        assert_eq!(finished.job.canceller, Some(canceller));
        // The next run is not affected by the earlier cancel.
        jobs.dispatch(job("p2", "next"), "%md next".to_owned(), "md".to_owned())
            .unwrap();
        gate.send(()).unwrap();
        wait_for_report(&notifier);
        assert!(!jobs.take_finished().expect("the next result").cancelled);
    }

    #[test]
    fn a_queued_job_is_cancelled_by_removal() {
        let (mut jobs, _gate, _notifier, _poll) = started();
        jobs.enqueue(job("p1", "run"));
        let removed = jobs.cancel("p1", None, Some("cancel")).expect("removed");
        assert_eq!(removed.msg_id.as_deref(), Some("cancel"));
        assert!(!jobs.is_active("p1"));
    }
}
