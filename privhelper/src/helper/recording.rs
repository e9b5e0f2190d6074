//! `Recording`, a [`Host`] double for the lifecycle's tests (compiled for tests only): it
//! records each call and can fail any set of steps, and touches nothing on the host, so the
//! order of building, unwinding and teardown is tested without root.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::cgroup::CgroupLimits;
use super::firewall::LinkRule;
use super::host::{Host, Launch, ListenOn, Made, Undo};
use super::network::Link;
use super::{StartError, StepError, TeardownError};

/// The steps of a build and of a teardown, as the double records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CheckUid,
    CreateNetns,
    CreateVeth,
    ConfigureLink,
    BindListeners,
    Allow,
    CreateCgroup,
    GiveDataDir,
    Spawn,
    /// Teardown's steps (the undos are recorded as [`Call::Undid`], and fail as these).
    Kill,
    Reap,
    KillCgroup,
    Revoke,
    RemoveCgroup,
    DeleteLink,
    RemoveNetns,
}

impl Step {
    fn of(undo: &Undo) -> Self {
        match undo {
            Undo::KillCgroup { .. } => Step::KillCgroup,
            Undo::RemoveNetns { .. } => Step::RemoveNetns,
            Undo::DeleteLink { .. } => Step::DeleteLink,
            Undo::Revoke(_) => Step::Revoke,
            Undo::RemoveCgroup { .. } => Step::RemoveCgroup,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Did(Step),
    Undid(Undo),
}

/// A host that does nothing but record, fails every step in `fail`, and reports `leftovers`
/// as a previous run's.
#[derive(Debug, Default)]
pub struct Recording {
    calls: Mutex<Vec<Call>>,
    fail: Vec<Step>,
    pub leftovers: Vec<Undo>,
    /// What each `bind_listeners` was asked for (`ListenOn`'s `Debug`).
    listened: Mutex<Vec<String>>,
    /// Listener sets handed out and not dropped yet.
    open: Arc<AtomicUsize>,
}

/// The double's listening sockets: counts itself open until dropped, as the real fds are
/// closed when the half-built sandbox holding them goes.
#[derive(Debug)]
pub struct OpenListeners(Arc<AtomicUsize>);

impl Drop for OpenListeners {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Recording {
    pub fn failing_at(steps: &[Step]) -> Self {
        Self {
            fail: steps.to_vec(),
            ..Self::default()
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn listened(&self) -> Vec<String> {
        self.listened.lock().unwrap().clone()
    }

    pub fn open_listeners(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Whether `step` is to fail; the message of its error names it.
    fn fails(&self, step: Step) -> Result<(), std::io::Error> {
        match self.fail.contains(&step) {
            true => Err(std::io::Error::other(format!("{step:?}"))),
            false => Ok(()),
        }
    }

    /// Records `step`, or fails it (a step that fails is recorded too: it was attempted).
    fn step(&self, step: Step) -> Result<(), StepError> {
        self.calls.lock().unwrap().push(Call::Did(step));
        self.fails(step).map_err(StepError::Spawn)
    }

    fn made<T>(&self, step: Step, value: T, undo: Undo) -> Result<Made<T>, StepError> {
        self.step(step)?;
        Ok(Made { value, undo })
    }
}

impl Host for Recording {
    type Netns = ();
    type Cgroup = ();
    type Sockets = OpenListeners;
    type Started = super::argv::Argv;
    type Process = ();

    fn check_uid(&self, _: u32) -> Result<(), StepError> {
        self.step(Step::CheckUid)
    }
    fn create_netns(&self, id: &str) -> Result<Made<()>, StepError> {
        let undo = Undo::RemoveNetns { id: id.into() };
        self.made(Step::CreateNetns, (), undo)
    }
    async fn create_veth(&self, _: &(), link: &str) -> Result<Made<()>, StepError> {
        let undo = Undo::DeleteLink { link: link.into() };
        self.made(Step::CreateVeth, (), undo)
    }
    async fn configure_link(&self, _: &(), _: &str, _: Link) -> Result<(), StepError> {
        self.step(Step::ConfigureLink)
    }
    fn bind_listeners(&self, on: ListenOn<'_>) -> Result<OpenListeners, StepError> {
        self.step(Step::BindListeners)?;
        self.listened.lock().unwrap().push(format!("{on:?}"));
        self.open.fetch_add(1, Ordering::SeqCst);
        Ok(OpenListeners(self.open.clone()))
    }
    fn allow(&self, rule: &LinkRule) -> Result<Made<()>, StepError> {
        self.made(Step::Allow, (), Undo::Revoke(rule.clone()))
    }
    fn create_cgroup(&self, id: &str, _: CgroupLimits) -> Result<Made<()>, StepError> {
        let undo = Undo::RemoveCgroup { id: id.into() };
        self.made(Step::CreateCgroup, (), undo)
    }
    fn give_data_dir(&self, _: &OwnedFd, _: u32, _: u32) -> Result<(), StepError> {
        self.step(Step::GiveDataDir)
    }
    async fn spawn(&self, launch: Launch<&(), &()>) -> Result<Self::Started, StepError> {
        self.step(Step::Spawn)?;
        Ok(launch.args)
    }
    async fn leftovers(&self) -> Result<Vec<Undo>, StartError> {
        Ok(self.leftovers.clone())
    }
    async fn undo(&self, undo: Undo) -> Result<(), TeardownError> {
        let step = Step::of(&undo);
        self.calls.lock().unwrap().push(Call::Undid(undo));
        self.fails(step).map_err(TeardownError::Kill)
    }
    fn kill(&self, _: &()) -> Result<(), TeardownError> {
        self.calls.lock().unwrap().push(Call::Did(Step::Kill));
        self.fails(Step::Kill).map_err(TeardownError::Kill)
    }
    async fn reap(&self, _: ()) -> Result<Option<std::process::ExitStatus>, TeardownError> {
        self.calls.lock().unwrap().push(Call::Did(Step::Reap));
        self.fails(Step::Reap).map_err(TeardownError::Kill)?;
        Ok(None)
    }
}
