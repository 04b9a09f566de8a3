//! Paragraph runs. Each interpreter has a lane of its own: a queue on the
//! loop side and a job thread that runs its scripts, so a slow `%sql`
//! stalls neither the event loop nor a `%md`. A lane starts one run at a
//! time, taking waiting runs first in, first out per principal and
//! round-robin across principals, so one user's queued runs do not hold
//! another user's. The runs held (queued or running) are bounded per
//! principal and server-wide. Job threads hand results back through the
//! server's `Notifier`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::interpreter::{
    ChildInterpreter, Interpreter, Interpreters, LoopIo, Reaper, StreamUpdate, parse_directive,
    resolve,
};
use super::model::Results;
use crate::handler::ConnectionId;
use crate::server::Notifier;

/// Default of [`RunLimits::per_principal`] (`notebook.max_runs_per_user`).
pub const DEFAULT_MAX_RUNS_PER_USER: usize = 100;

/// Default of [`RunLimits::total`] (`notebook.max_runs`).
pub const DEFAULT_MAX_RUNS: usize = 10_000;

/// How many paragraph runs may be held (queued or running) at once. Each
/// held run keeps its job, and a RUN_ALL batch its list, in memory, so
/// without a bound a client could make the server hold any number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Runs one principal may hold.
    pub per_principal: usize,
    /// Runs all principals together may hold.
    pub total: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            per_principal: DEFAULT_MAX_RUNS_PER_USER,
            total: DEFAULT_MAX_RUNS,
        }
    }
}

/// Why a run was refused: a bound of [`RunLimits`] is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRefused {
    /// The principal already holds this many runs.
    PrincipalFull {
        /// The bound reached.
        limit: usize,
    },
    /// The server already holds this many runs.
    ServerFull {
        /// The bound reached.
        limit: usize,
    },
}

impl fmt::Display for RunRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunRefused::PrincipalFull { limit } => write!(
                f,
                "you already have {limit} paragraph runs queued or running (notebook.max_runs_per_user); wait for some to end or cancel them"
            ),
            RunRefused::ServerFull { limit } => write!(
                f,
                "the server already has {limit} paragraph runs queued or running (notebook.max_runs); try again later"
            ),
        }
    }
}

impl std::error::Error for RunRefused {}

/// Interrupts the script an interpreter is running; called on the loop
/// thread while the interpreter runs on its lane's thread.
pub type Interrupt = Box<dyn Fn() + Send>;

/// An interpreter to give a lane of its own, and how to interrupt it.
pub struct Runner {
    /// The interpreter; moved onto the lane's thread by [`Jobs::start`].
    pub interpreter: Box<dyn Interpreter>,
    /// Stops its running script on cancel; `None` for an interpreter
    /// whose scripts are short and always run to their end.
    pub interrupt: Option<Interrupt>,
}

/// A paragraph waiting for, or in, its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The note holding the paragraph.
    pub note_id: String,
    /// The paragraph to run.
    pub paragraph_id: String,
    /// The principal it runs for: runs wait in line per principal, and
    /// count against that principal's bound.
    pub principal: String,
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

/// Where a lane's dispatched run stands, shared by the loop (which
/// cancels) and the lane's thread (which ends runs). Whichever side moves
/// it away from `RUNNING` first decides the outcome, so a cancel arriving
/// after a run ended, but before the loop collected its result, cannot turn
/// a FINISHED run into ABORT.
type RunState = Arc<AtomicU8>;

/// Cancels a lane's dispatched run unless it already ended; whether it did.
fn cancel_run(run_state: &RunState, interrupt: Option<&Interrupt>) -> bool {
    let cancelled = run_state
        .compare_exchange(RUNNING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if cancelled && let Some(interrupt) = interrupt {
        interrupt();
    }
    cancelled
}

struct Work {
    text: String,
    default_group: String,
}

/// A run's end, as a lane's thread reports it.
struct Report {
    lane: usize,
    results: Results,
    cancelled: bool,
}

/// A finished run, as reported by its lane's thread.
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

/// A waiting run taken by its idle lane, with the text it will run: mark
/// it RUNNING, then hand it to [`Jobs::dispatch`].
#[derive(Debug)]
pub struct Ready {
    /// The run.
    pub job: Job,
    lane: usize,
    text: String,
    default_group: String,
}

/// The runs waiting in one lane: first in, first out per principal, taken
/// round-robin across principals.
#[derive(Debug, Default)]
struct Waiting {
    /// Principals with waiting runs, in the order of their turns; never
    /// holds `last_taken`, which rejoins at the back at the next take.
    turns: VecDeque<String>,
    /// Each principal's waiting runs, oldest first; never an empty queue.
    runs: HashMap<String, VecDeque<Job>>,
    /// Whose run was taken last. It rejoins the turns only when the next
    /// run is taken, so a principal who starts waiting meanwhile goes
    /// before that principal's next run.
    last_taken: Option<String>,
}

impl Waiting {
    /// Queues a run behind its principal's others.
    fn push(&mut self, job: Job) {
        if let Some(queue) = self.runs.get_mut(&job.principal) {
            queue.push_back(job);
            return;
        }
        if self.last_taken.as_deref() != Some(job.principal.as_str()) {
            self.turns.push_back(job.principal.clone());
        }
        self.runs
            .insert(job.principal.clone(), VecDeque::from([job]));
    }

    /// Takes the oldest run of the principal whose turn it is.
    fn take(&mut self) -> Option<Job> {
        if let Some(last) = self.last_taken.take()
            && self.runs.contains_key(&last)
        {
            self.turns.push_back(last);
        }
        while let Some(principal) = self.turns.pop_front() {
            let Some(queue) = self.runs.get_mut(&principal) else {
                continue;
            };
            let Some(job) = queue.pop_front() else {
                self.runs.remove(&principal);
                continue;
            };
            if queue.is_empty() {
                self.runs.remove(&principal);
            }
            self.last_taken = Some(principal);
            return Some(job);
        }
        None
    }

    /// Removes a waiting run of `paragraph_id`, if there is one.
    fn remove_paragraph(&mut self, paragraph_id: &str) -> Option<Job> {
        let (principal, position) = self.runs.iter().find_map(|(principal, queue)| {
            queue
                .iter()
                .position(|job| job.paragraph_id == paragraph_id)
                .map(|position| (principal.clone(), position))
        })?;
        let queue = self.runs.get_mut(&principal)?;
        let job = queue.remove(position);
        if queue.is_empty() {
            self.runs.remove(&principal);
            self.turns.retain(|p| *p != principal);
        }
        job
    }

    /// Removes the waiting runs of note `note_id`.
    fn remove_note(&mut self, note_id: &str) -> Vec<Job> {
        let mut removed = Vec::new();
        for queue in self.runs.values_mut() {
            let (gone, kept): (VecDeque<Job>, VecDeque<Job>) = std::mem::take(queue)
                .into_iter()
                .partition(|j| j.note_id == note_id);
            *queue = kept;
            removed.extend(gone);
        }
        self.runs.retain(|_, queue| !queue.is_empty());
        let runs = &self.runs;
        self.turns.retain(|principal| runs.contains_key(principal));
        removed
    }
}

/// Counts of the runs [`Jobs`] holds (queued or running), for
/// [`RunLimits`] and [`Jobs::is_active`].
#[derive(Debug, Default)]
struct Held {
    by_principal: HashMap<String, usize>,
    by_paragraph: HashMap<String, usize>,
    total: usize,
}

impl Held {
    fn add(&mut self, job: &Job) {
        *self.by_principal.entry(job.principal.clone()).or_default() += 1;
        *self
            .by_paragraph
            .entry(job.paragraph_id.clone())
            .or_default() += 1;
        self.total += 1;
    }

    fn remove(&mut self, job: &Job) {
        decrement(&mut self.by_principal, &job.principal);
        decrement(&mut self.by_paragraph, &job.paragraph_id);
        self.total = self.total.saturating_sub(1);
    }
}

/// Counts one fewer for `key`, forgetting it at zero.
fn decrement(counts: &mut HashMap<String, usize>, key: &str) {
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// One interpreter's queue, its running job and its thread.
struct Lane {
    /// The interpreter's `%name`.
    name: &'static str,
    waiting: Waiting,
    running: Option<Job>,
    run_state: RunState,
    interrupt: Option<Interrupt>,
    /// The interpreter, until [`Jobs::start`] moves it onto the thread.
    interpreter: Option<Box<dyn Interpreter>>,
    to_thread: Option<mpsc::Sender<Work>>,
    thread: Option<JoinHandle<()>>,
    /// A child-process interpreter, driven on the loop instead of a thread.
    child: Option<ChildInterpreter>,
}

/// The lanes, one per interpreter, and the runs they hold.
pub struct Jobs {
    lanes: Vec<Lane>,
    limits: RunLimits,
    held: Held,
    reports: mpsc::Receiver<Report>,
    report_sender: mpsc::Sender<Report>,
    /// Runs of child interpreters that ended, until taken.
    child_ended: VecDeque<Finished>,
    /// Kills children left behind if the server dies.
    reaper: Reaper,
}

impl Jobs {
    /// A lane per runner, each started by [`Jobs::start`]; the first also
    /// takes paragraphs whose interpreter none of them is (they end with
    /// "Interpreter name not found").
    pub fn new(runners: Vec<Runner>, limits: RunLimits) -> Jobs {
        Jobs::with_children(runners, Vec::new(), limits)
    }

    /// Like [`Jobs::new`], plus a lane per child-process interpreter,
    /// driven on the loop (see [`Jobs::dispatch_on`]).
    pub fn with_children(
        runners: Vec<Runner>,
        children: Vec<ChildInterpreter>,
        limits: RunLimits,
    ) -> Jobs {
        let (report_sender, reports) = mpsc::channel();
        let lane = |name, interrupt, interpreter, child| Lane {
            name,
            waiting: Waiting::default(),
            running: None,
            run_state: Arc::new(AtomicU8::new(IDLE)),
            interrupt,
            interpreter,
            to_thread: None,
            thread: None,
            child,
        };
        let mut lanes: Vec<Lane> = runners
            .into_iter()
            .map(|runner| {
                lane(
                    runner.interpreter.name(),
                    runner.interrupt,
                    Some(runner.interpreter),
                    None,
                )
            })
            .collect();
        for child in children {
            lanes.push(lane(child.kind().name(), None, None, Some(child)));
        }
        Jobs {
            lanes,
            limits,
            held: Held::default(),
            reports,
            report_sender,
            child_ended: VecDeque::new(),
            reaper: Reaper::default(),
        }
    }

    /// Starts each lane's thread; it notifies the loop after each run.
    pub fn start(&mut self, notifier: Notifier) {
        for (index, lane) in self.lanes.iter_mut().enumerate() {
            let Some(interpreter) = lane.interpreter.take() else {
                continue;
            };
            let (to_thread, work) = mpsc::channel::<Work>();
            let reports = self.report_sender.clone();
            let run_state = Arc::clone(&lane.run_state);
            let notifier = notifier.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("wsloop-jobs-{}", lane.name))
                .spawn(move || {
                    let mut interpreters = Interpreters::new(vec![interpreter]);
                    while let Ok(work) = work.recv() {
                        let results = interpreters.run(&work.text, &work.default_group);
                        let cancelled = run_state.swap(IDLE, Ordering::SeqCst) == CANCELLED;
                        let report = Report {
                            lane: index,
                            results,
                            cancelled,
                        };
                        if reports.send(report).is_err() {
                            break;
                        }
                        if let Err(error) = notifier.notify() {
                            log::warn!("job thread cannot wake the loop: {error}");
                        }
                    }
                });
            match spawned {
                Ok(thread) => {
                    lane.thread = Some(thread);
                    lane.to_thread = Some(to_thread);
                }
                Err(error) => log::error!("cannot start the {} job thread: {error}", lane.name),
            }
        }
    }

    /// Whether `principal` may queue one more run.
    pub fn admit(&self, principal: &str) -> Result<(), RunRefused> {
        let limits = self.limits;
        if self.held.by_principal.get(principal).copied().unwrap_or(0) >= limits.per_principal {
            return Err(RunRefused::PrincipalFull {
                limit: limits.per_principal,
            });
        }
        if self.held.total >= limits.total {
            return Err(RunRefused::ServerFull {
                limit: limits.total,
            });
        }
        Ok(())
    }

    /// Queues a job, whose paragraph holds `text`, on the lane of the
    /// interpreter `text` selects (`default_group` without a directive),
    /// behind its principal's other runs there. It does not check the
    /// bounds: check [`Jobs::admit`] first. Gives the job back if there is
    /// no lane at all.
    pub fn enqueue(&mut self, job: Job, text: &str, default_group: &str) -> Result<(), Box<Job>> {
        let Some(lane) = self.lane_for(text, default_group) else {
            return Err(Box::new(job));
        };
        self.held.add(&job);
        self.lanes[lane].waiting.push(job);
        Ok(())
    }

    /// The lane of the interpreter `text` selects; the first lane if none
    /// has it, `None` if there are no lanes.
    fn lane_for(&self, text: &str, default_group: &str) -> Option<usize> {
        let name = parse_directive(text).name.unwrap_or(default_group);
        let wanted = resolve(name).map(|info| info.lane);
        self.lanes
            .iter()
            .position(|lane| Some(lane.name) == wanted)
            .or((!self.lanes.is_empty()).then_some(0))
    }

    /// Takes the next run an idle lane can start. `paragraph` gives a job's
    /// current paragraph text and its note's default interpreter, or
    /// `None` when the paragraph is gone (the job is dropped). A job whose
    /// text now selects another interpreter moves to that lane's queue.
    pub fn next_to_run(
        &mut self,
        mut paragraph: impl FnMut(&Job) -> Option<(String, String)>,
    ) -> Option<Ready> {
        let mut index = 0;
        while index < self.lanes.len() {
            let lane = &mut self.lanes[index];
            let taken = if lane.running.is_none() {
                lane.waiting.take()
            } else {
                None
            };
            let Some(job) = taken else {
                index += 1;
                continue;
            };
            self.held.remove(&job);
            let Some((text, default_group)) = paragraph(&job) else {
                continue;
            };
            match self.lane_for(&text, &default_group) {
                Some(lane) if lane != index => {
                    self.held.add(&job);
                    self.lanes[lane].waiting.push(job);
                    index = index.min(lane);
                }
                _ => {
                    return Some(Ready {
                        job,
                        lane: index,
                        text,
                        default_group,
                    });
                }
            }
        }
        None
    }

    /// Hands a run to its lane's thread; gives the job back if the thread
    /// is not available.
    pub fn dispatch(&mut self, ready: Ready) -> Result<(), Box<Job>> {
        let Ready {
            job,
            lane,
            text,
            default_group,
        } = ready;
        let Some(lane) = self.lanes.get_mut(lane) else {
            return Err(Box::new(job));
        };
        let Some(sender) = lane.to_thread.as_ref() else {
            return Err(Box::new(job));
        };
        lane.run_state.store(RUNNING, Ordering::SeqCst);
        if sender
            .send(Work {
                text,
                default_group,
            })
            .is_err()
        {
            lane.run_state.store(IDLE, Ordering::SeqCst);
            return Err(Box::new(job));
        }
        self.held.add(&job);
        lane.running = Some(job);
        Ok(())
    }

    /// Starts a run on its lane: on the lane's thread, or, for a child
    /// interpreter, by writing it to the child (started first if needed).
    /// Gives the job back, with why, if it cannot start.
    pub fn dispatch_on(
        &mut self,
        ready: Ready,
        io: &mut dyn LoopIo,
    ) -> Result<(), (Box<Job>, String)> {
        let is_child = self
            .lanes
            .get(ready.lane)
            .is_some_and(|lane| lane.child.is_some());
        if !is_child {
            return self
                .dispatch(ready)
                .map_err(|job| (job, "the interpreter thread is not running".to_owned()));
        }
        let Ready {
            job,
            lane,
            text,
            default_group,
        } = ready;
        let directive = parse_directive(&text);
        let name = directive.name.unwrap_or(&default_group);
        let key = resolve(name).map_or(name, |info| info.name);
        let Some(lane) = self.lanes.get_mut(lane) else {
            return Err((Box::new(job), "no such interpreter".to_owned()));
        };
        let Some(child) = lane.child.as_mut() else {
            return Err((Box::new(job), "no such interpreter".to_owned()));
        };
        if let Err(why) = child.start(io, &mut self.reaper, key, directive.script) {
            return Err((Box::new(job), why));
        }
        self.held.add(&job);
        lane.running = Some(job);
        Ok(())
    }

    /// A watched pipe is ready: the child interpreter it belongs to reads
    /// or writes it. Whether it was one of theirs.
    pub fn on_source_ready(
        &mut self,
        io: &mut dyn LoopIo,
        source: crate::server::SourceId,
    ) -> bool {
        let reaper = &mut self.reaper;
        let Some(index) = self
            .lanes
            .iter()
            .position(|lane| lane.child.as_ref().is_some_and(|c| c.owns(source)))
        else {
            return false;
        };
        if let Some(child) = self.lanes[index].child.as_mut() {
            child.on_ready(io, reaper, source);
        }
        self.collect_child_ends();
        true
    }

    /// Escalates cancels, enforces time limits and reaps exiting children.
    pub fn on_alarm(&mut self, io: &mut dyn LoopIo) {
        let now = io.now();
        for lane in &mut self.lanes {
            if let Some(child) = lane.child.as_mut()
                && child.next_deadline().is_some_and(|at| at <= now)
            {
                child.on_alarm(io, &mut self.reaper);
            }
        }
        self.collect_child_ends();
    }

    /// When [`Jobs::on_alarm`] next has something to do.
    pub fn next_deadline(&self) -> Option<std::time::Instant> {
        self.lanes
            .iter()
            .filter_map(|lane| lane.child.as_ref()?.next_deadline())
            .min()
    }

    /// Whether running child interpreters printed since the last
    /// [`Jobs::take_stream_updates`].
    pub fn has_stream_updates(&self) -> bool {
        self.lanes
            .iter()
            .any(|lane| lane.child.as_ref().is_some_and(|c| c.has_updates()))
    }

    /// What running paragraphs printed since the last call: (job, updates).
    pub fn take_stream_updates(&mut self) -> Vec<(Job, Vec<StreamUpdate>)> {
        let mut all = Vec::new();
        for lane in &mut self.lanes {
            if let (Some(child), Some(job)) = (lane.child.as_mut(), lane.running.as_ref()) {
                let updates = child.take_updates();
                if !updates.is_empty() {
                    all.push((job.clone(), updates));
                }
            }
        }
        all
    }

    /// Ends the child interpreter `name` (its run, if any, ends as ABORT);
    /// the next run starts it again. Whether there is such an interpreter.
    pub fn restart(&mut self, name: &str, io: &mut dyn LoopIo) -> bool {
        let Some(lane) = self
            .lanes
            .iter_mut()
            .find(|lane| lane.name == name && lane.child.is_some())
        else {
            return false;
        };
        if let Some(child) = lane.child.as_mut() {
            child.stop(Some(io), &mut self.reaper);
        }
        self.collect_child_ends();
        true
    }

    /// Moves the runs child interpreters ended to the finished queue.
    fn collect_child_ends(&mut self) {
        for lane in &mut self.lanes {
            let Some(child) = lane.child.as_mut() else {
                continue;
            };
            let Some(end) = child.take_ended() else {
                continue;
            };
            if let Some(job) = lane.running.take() {
                self.held.remove(&job);
                self.child_ended.push_back(Finished {
                    job,
                    results: end.results,
                    cancelled: end.cancelled,
                });
            }
        }
    }

    /// Collects a finished run, if a lane's thread produced one.
    pub fn take_finished(&mut self) -> Option<Finished> {
        if let Some(finished) = self.child_ended.pop_front() {
            return Some(finished);
        }
        loop {
            let report = self.reports.try_recv().ok()?;
            let Some(job) = self
                .lanes
                .get_mut(report.lane)
                .and_then(|lane| lane.running.take())
            else {
                continue;
            };
            self.held.remove(&job);
            return Some(Finished {
                job,
                results: report.results,
                cancelled: report.cancelled,
            });
        }
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
        if !self.is_active(paragraph_id) {
            return None;
        }
        for lane in &mut self.lanes {
            if let Some(mut job) = lane.waiting.remove_paragraph(paragraph_id) {
                self.held.remove(&job);
                job.answer_cancel(canceller, msg_id);
                return Some(job);
            }
        }
        for lane in &mut self.lanes {
            if let Some(job) = lane.running.as_mut()
                && job.paragraph_id == paragraph_id
            {
                if let Some(child) = lane.child.as_mut() {
                    if child.cancel(std::time::Instant::now()) {
                        job.answer_cancel(canceller, msg_id);
                    }
                    continue;
                }
                if cancel_run(&lane.run_state, lane.interrupt.as_ref()) {
                    job.answer_cancel(canceller, msg_id);
                } else {
                    job.canceller = canceller;
                }
            }
        }
        None
    }

    /// Drops queued jobs of a note (deleted) and cancels its running ones.
    pub fn forget_note(&mut self, note_id: &str) {
        for lane in &mut self.lanes {
            for job in lane.waiting.remove_note(note_id) {
                self.held.remove(&job);
            }
            if lane
                .running
                .as_ref()
                .is_some_and(|job| job.note_id == note_id)
            {
                if let Some(child) = lane.child.as_mut() {
                    child.cancel(std::time::Instant::now());
                } else {
                    cancel_run(&lane.run_state, lane.interrupt.as_ref());
                }
            }
        }
    }

    /// Whether a run of note `note_id` is queued or running.
    pub fn holds_note(&self, note_id: &str) -> bool {
        self.lanes.iter().any(|lane| {
            lane.running
                .as_ref()
                .is_some_and(|job| job.note_id == note_id)
                || lane
                    .waiting
                    .runs
                    .values()
                    .any(|queue| queue.iter().any(|job| job.note_id == note_id))
        })
    }

    /// Whether `paragraph_id` is queued or running.
    pub fn is_active(&self, paragraph_id: &str) -> bool {
        self.held.by_paragraph.contains_key(paragraph_id)
    }

    /// How many runs are queued or running, over all principals.
    pub fn runs_held(&self) -> usize {
        self.held.total
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        for lane in &mut self.lanes {
            if let Some(interrupt) = &lane.interrupt {
                interrupt();
            }
            lane.to_thread = None;
        }
        for lane in &mut self.lanes {
            if let Some(thread) = lane.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::model::ResultMessage;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    /// Runs paragraphs of one built-in interpreter only when the test lets
    /// it, one per gate.
    struct Gated {
        name: &'static str,
        gate: mpsc::Receiver<()>,
    }

    impl Interpreter for Gated {
        fn name(&self) -> &'static str {
            self.name
        }
        fn run(&mut self, script: &str) -> Results {
            let _ = self.gate.recv();
            Results {
                code: "SUCCESS".to_owned(),
                msg: vec![ResultMessage::text(format!("{}: {script}", self.name))],
            }
        }
    }

    /// Jobs with a gated `md` lane and a gated `sql` lane, and the
    /// paragraph texts its runs look up.
    struct Fixture {
        // The gates close before the jobs drop, so a gated run ends and
        // its thread can be joined.
        md_gate: mpsc::Sender<()>,
        sql_gate: mpsc::Sender<()>,
        jobs: Jobs,
        notifier: Notifier,
        _poll: mio::Poll,
        texts: HashMap<String, String>,
    }

    impl Fixture {
        fn new(limits: RunLimits) -> Fixture {
            let (md_gate, md_gated) = mpsc::channel();
            let (sql_gate, sql_gated) = mpsc::channel();
            let runner = |name, gate| Runner {
                interpreter: Box::new(Gated { name, gate }),
                interrupt: None,
            };
            let mut jobs = Jobs::new(
                vec![runner("md", md_gated), runner("sql", sql_gated)],
                limits,
            );
            let poll = mio::Poll::new().unwrap();
            let notifier = Notifier {
                pending: Arc::new(AtomicBool::new(false)),
                waker: Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap()),
            };
            jobs.start(notifier.clone());
            Fixture {
                md_gate,
                sql_gate,
                jobs,
                notifier,
                _poll: poll,
                texts: HashMap::new(),
            }
        }

        /// Queues paragraph `id` of `note` for `principal`, holding `text`.
        fn queue(&mut self, principal: &str, note: &str, id: &str, text: &str) {
            self.texts.insert(id.to_owned(), text.to_owned());
            let job = Job {
                note_id: note.to_owned(),
                principal: principal.to_owned(),
                ..job(id, "run")
            };
            self.jobs.admit(principal).unwrap();
            self.jobs.enqueue(job, text, "md").unwrap();
        }

        /// Dispatches every run an idle lane can start; their paragraphs.
        fn start(&mut self) -> Vec<String> {
            let mut started = Vec::new();
            let texts = &self.texts;
            while let Some(ready) = self.jobs.next_to_run(|job| {
                texts
                    .get(&job.paragraph_id)
                    .map(|text| (text.clone(), "md".to_owned()))
            }) {
                started.push(ready.job.paragraph_id.clone());
                self.jobs.dispatch(ready).unwrap();
            }
            started
        }

        /// Lets one run through `gate` and collects it.
        fn finish(&mut self, sql: bool) -> Finished {
            let gate = if sql { &self.sql_gate } else { &self.md_gate };
            gate.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(finished) = self.jobs.take_finished() {
                    return finished;
                }
                assert!(Instant::now() < deadline, "no run finished");
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        /// Runs every `%sql` paragraph queued, one after another; the
        /// order they started in.
        fn sql_order(&mut self) -> Vec<String> {
            let mut order = self.start();
            while !order.is_empty() && self.jobs.runs_held() > 0 {
                self.finish(true);
                order.extend(self.start());
            }
            order
        }
    }

    fn job(paragraph_id: &str, msg_id: &str) -> Job {
        Job {
            note_id: "n1".to_owned(),
            paragraph_id: paragraph_id.to_owned(),
            principal: "anonymous".to_owned(),
            requester: ConnectionId {
                index: 1,
                generation: 0,
            },
            msg_id: Some(msg_id.to_owned()),
            canceller: None,
            then: Vec::new(),
        }
    }

    /// Waits (bounded) until a lane's thread reported a run.
    fn wait_for_report(notifier: &Notifier) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !notifier.take_pending() {
            assert!(Instant::now() < deadline, "the job thread reported nothing");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_cancel_after_the_run_ended_leaves_its_outcome() {
        let mut f = Fixture::new(RunLimits::default());
        f.queue("anonymous", "n1", "p1", "%md done");
        assert_eq!(f.start(), ["p1"]);
        f.md_gate.send(()).unwrap();
        wait_for_report(&f.notifier);
        // The run ended, but the loop has not collected it yet.
        let canceller = ConnectionId {
            index: 2,
            generation: 0,
        };
        assert_eq!(f.jobs.cancel("p1", Some(canceller), Some("cancel")), None);
        let finished = f.jobs.take_finished().expect("the run's result");
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
        let mut f = Fixture::new(RunLimits::default());
        f.queue("anonymous", "n1", "p1", "%md slow");
        assert_eq!(f.start(), ["p1"]);
        let canceller = ConnectionId {
            index: 2,
            generation: 0,
        };
        assert_eq!(f.jobs.cancel("p1", Some(canceller), Some("cancel")), None);
        let finished = f.finish(false);
        assert!(finished.cancelled);
        assert_eq!(finished.job.msg_id.as_deref(), Some("cancel"));
        assert_eq!(finished.job.canceller, Some(canceller));
        // The next run is not affected by the earlier cancel.
        f.queue("anonymous", "n1", "p2", "%md next");
        assert_eq!(f.start(), ["p2"]);
        assert!(!f.finish(false).cancelled);
    }

    #[test]
    fn a_queued_job_is_cancelled_by_removal() {
        let mut f = Fixture::new(RunLimits::default());
        f.queue("anonymous", "n1", "p1", "%md run");
        let removed = f.jobs.cancel("p1", None, Some("cancel")).expect("removed");
        assert_eq!(removed.msg_id.as_deref(), Some("cancel"));
        assert!(!f.jobs.is_active("p1"));
        assert_eq!(f.jobs.runs_held(), 0);
        assert!(f.start().is_empty());
    }

    #[test]
    fn an_md_paragraph_runs_while_an_sql_one_is_blocked() {
        let mut f = Fixture::new(RunLimits::default());
        f.queue("alice", "n1", "q1", "%sql select forever");
        f.queue("alice", "n1", "q2", "%sql select forever");
        assert_eq!(f.start(), ["q1"]);
        f.queue("bob", "n2", "m1", "%md hello");
        assert_eq!(f.start(), ["m1"], "the md lane is free");
        let finished = f.finish(false);
        assert_eq!(finished.job.paragraph_id, "m1");
        assert_eq!(finished.results.msg[0].data, "md: hello");
        assert!(f.jobs.is_active("q1") && f.jobs.is_active("q2"));
        assert_eq!(f.finish(true).job.paragraph_id, "q1");
        assert_eq!(f.start(), ["q2"]);
    }

    #[test]
    fn another_principal_goes_before_a_second_queued_run() {
        let mut f = Fixture::new(RunLimits::default());
        for id in ["a1", "a2", "a3"] {
            f.queue("alice", "n1", id, "%sql a");
        }
        assert_eq!(f.start(), ["a1"]);
        f.queue("bob", "n2", "b1", "%sql b");
        f.queue("bob", "n2", "b2", "%sql b");
        f.queue("carol", "n3", "c1", "%sql c");
        assert_eq!(f.finish(true).job.paragraph_id, "a1");
        assert_eq!(
            f.sql_order(),
            ["b1", "c1", "a2", "b2", "a3"],
            "one run per principal in turn, each principal's in order"
        );
    }

    #[test]
    fn each_user_s_runs_of_a_note_keep_their_order() {
        let mut f = Fixture::new(RunLimits::default());
        // Alice runs note n1's paragraphs one by one; Bob has a note of his
        // own and runs one of n1's too.
        for (principal, note, id) in [
            ("alice", "n1", "p1"),
            ("alice", "n1", "p2"),
            ("alice", "n1", "p3"),
            ("bob", "n2", "q1"),
            ("bob", "n1", "p4"),
            ("bob", "n2", "q2"),
        ] {
            f.queue(principal, note, id, "%sql x");
        }
        // Turns alternate between the users; each user's runs keep the
        // order they were asked in, in every note.
        assert_eq!(f.sql_order(), ["p1", "q1", "p2", "p4", "p3", "q2"]);
    }

    #[test]
    fn a_paragraph_edited_to_another_interpreter_runs_on_that_lane() {
        let mut f = Fixture::new(RunLimits::default());
        f.queue("alice", "n1", "q1", "%sql select forever");
        f.queue("alice", "n1", "p2", "%sql select 1");
        assert_eq!(f.start(), ["q1"]);
        // While it waits, p2 becomes a %md paragraph.
        f.texts
            .insert("p2".to_owned(), "%md now markdown".to_owned());
        assert_eq!(f.finish(true).job.paragraph_id, "q1");
        assert_eq!(f.start(), ["p2"]);
        let finished = f.finish(false);
        assert_eq!(finished.job.paragraph_id, "p2");
        assert_eq!(finished.results.msg[0].data, "md: now markdown");
        assert_eq!(f.jobs.runs_held(), 0);
    }

    #[test]
    fn runs_beyond_a_bound_are_refused_until_some_end() {
        let mut f = Fixture::new(RunLimits {
            per_principal: 2,
            total: 3,
        });
        f.queue("alice", "n1", "a1", "%sql a");
        f.queue("alice", "n1", "a2", "%sql a");
        assert_eq!(
            f.jobs.admit("alice"),
            Err(RunRefused::PrincipalFull { limit: 2 })
        );
        assert!(
            RunRefused::PrincipalFull { limit: 2 }
                .to_string()
                .contains("2 paragraph runs queued or running (notebook.max_runs_per_user)")
        );
        f.queue("bob", "n2", "b1", "%md b");
        assert_eq!(
            f.jobs.admit("carol"),
            Err(RunRefused::ServerFull { limit: 3 })
        );
        // A running run still counts; an ended or cancelled one does not.
        f.start();
        assert!(f.jobs.admit("carol").is_err());
        f.finish(false);
        assert_eq!(f.jobs.admit("carol"), Ok(()));
        assert!(f.jobs.admit("alice").is_err());
        assert!(f.jobs.cancel("a2", None, None).is_some());
        assert_eq!(f.jobs.admit("alice"), Ok(()));
        f.jobs.forget_note("n1");
        f.finish(true);
        assert_eq!(f.jobs.runs_held(), 0);
    }
}
