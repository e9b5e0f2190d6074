//! Per-sandbox cgroups: resource ceilings and a reliable "kill everything in it".
//!
//! Works on a pure cgroup v2 host (systemd's default; the helper unit has `Delegate=yes`) and on
//! hybrid hosts where memory/pids/cpu are still v1 controllers: each limit goes to whichever
//! hierarchy has its controller, and the v2 hierarchy, where present, provides `cgroup.kill`.
//! Sandboxes live in `<own cgroup>/<instance>/<id>` in every hierarchy used.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {message}")]
pub struct CgroupError {
    path: String,
    message: String,
}

fn err(path: &Path, message: impl std::fmt::Display) -> CgroupError {
    CgroupError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Where our sandboxes' cgroups go, per controller.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Parent dir in the v2 hierarchy (kill, and limits when v2 has the controllers).
    v2: Option<PathBuf>,
    v2_memory: bool,
    v2_pids: bool,
    v2_cpu: bool,
    /// Parent dirs in v1 hierarchies, for controllers v2 lacks.
    v1_memory: Option<PathBuf>,
    v1_pids: Option<PathBuf>,
    v1_cpu: Option<PathBuf>,
}

/// One sandbox's cgroup directories, and `cgroup.procs` files opened for the launcher.
#[derive(Debug)]
pub struct SandboxCgroup {
    pub dirs: Vec<PathBuf>,
    v2_dir: Option<PathBuf>,
}

/// The limits to write.
#[derive(Debug, Clone, Copy)]
pub struct CgroupLimits {
    pub memory_max: u64,
    pub pids_max: u32,
    pub cpu_percent: u32,
}

const CPU_PERIOD_US: u64 = 100_000;

impl Layout {
    /// Reads the mounted hierarchies and our own place in them.
    pub fn detect(instance: &str) -> Result<Self, CgroupError> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| err(Path::new("/proc/self/mountinfo"), e))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| err(Path::new("/proc/self/cgroup"), e))?;
        let own_path = |controller: Option<&str>| -> Option<String> {
            own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                let matches = match controller {
                    None => ctrls.is_empty(),
                    Some(c) => ctrls.split(',').any(|x| x == c),
                };
                matches.then(|| path.to_owned())
            })
        };
        let mut layout = Layout::default();
        for line in mountinfo.lines() {
            // "... <mount point> <opts> ... - <fstype> <source> <super opts>"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let point = left.split(' ').nth(4).unwrap_or_default();
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or_default();
            let super_opts = right.nth(1).unwrap_or_default();
            let join = |own: Option<String>| {
                own.map(|o| {
                    Path::new(point)
                        .join(o.trim_start_matches('/'))
                        .join(instance)
                })
            };
            match fstype {
                "cgroup2" if layout.v2.is_none() => {
                    let controllers =
                        std::fs::read_to_string(Path::new(point).join("cgroup.controllers"))
                            .unwrap_or_default();
                    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
                    layout.v2_memory = has("memory");
                    layout.v2_pids = has("pids");
                    layout.v2_cpu = has("cpu");
                    layout.v2 = join(own_path(None));
                }
                "cgroup" => {
                    let opts: Vec<&str> = super_opts.split(',').collect();
                    for (name, slot) in [
                        ("memory", &mut layout.v1_memory),
                        ("pids", &mut layout.v1_pids),
                        ("cpu", &mut layout.v1_cpu),
                    ] {
                        if opts.contains(&name) && slot.is_none() {
                            *slot = join(own_path(Some(name)));
                        }
                    }
                }
                _ => {}
            }
        }
        if layout.v2_memory {
            layout.v1_memory = None;
        }
        if layout.v2_pids {
            layout.v1_pids = None;
        }
        if layout.v2_cpu {
            layout.v1_cpu = None;
        }
        Ok(layout)
    }

    /// Creates the parent dirs; on v2 with controllers, moves the helper into a leaf first
    /// (v2 forbids processes in a cgroup that hands controllers to its children).
    pub fn prepare(&self) -> Result<(), CgroupError> {
        if let Some(v2) = &self.v2 {
            let wanted: Vec<&str> = [
                (self.v2_memory, "+memory"),
                (self.v2_pids, "+pids"),
                (self.v2_cpu, "+cpu"),
            ]
            .iter()
            .filter_map(|(on, c)| on.then_some(*c))
            .collect();
            let own = v2.parent().expect("instance dir has a parent");
            if !wanted.is_empty() && own.join("cgroup.type").exists() {
                let leaf = own.join("supervisor");
                mkdir(&leaf)?;
                write(&leaf.join("cgroup.procs"), "0")?;
                for c in &wanted {
                    write(&own.join("cgroup.subtree_control"), c)?;
                }
            }
            mkdir(v2)?;
            for c in &wanted {
                write(&v2.join("cgroup.subtree_control"), c)?;
            }
        }
        for dir in [&self.v1_memory, &self.v1_pids, &self.v1_cpu]
            .into_iter()
            .flatten()
        {
            mkdir(dir)?;
        }
        Ok(())
    }

    fn parents(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.v2, &self.v1_memory, &self.v1_pids, &self.v1_cpu]
            .into_iter()
            .flatten()
    }

    pub fn create(&self, id: &str, limits: CgroupLimits) -> Result<SandboxCgroup, CgroupError> {
        let mut cg = SandboxCgroup {
            dirs: Vec::new(),
            v2_dir: None,
        };
        if let Err(e) = self.fill(id, limits, &mut cg) {
            if let Err(also) = cg.remove() {
                tracing::warn!("{also}");
            }
            return Err(e);
        }
        Ok(cg)
    }

    fn fill(&self, id: &str, l: CgroupLimits, cg: &mut SandboxCgroup) -> Result<(), CgroupError> {
        let quota = u64::from(l.cpu_percent) * CPU_PERIOD_US / 100;
        let (memory, pids) = (l.memory_max.to_string(), l.pids_max.to_string());
        // Creates `<parent>/<id>` and records it (before writing to it, so it is removed on error).
        let mut sub = |parent: &Option<PathBuf>| -> Result<Option<PathBuf>, CgroupError> {
            let Some(dir) = parent.as_ref().map(|p| p.join(id)) else {
                return Ok(None);
            };
            mkdir(&dir)?;
            cg.dirs.push(dir.clone());
            Ok(Some(dir))
        };
        let v2 = sub(&self.v2)?;
        let v1_memory = sub(&self.v1_memory)?;
        let v1_pids = sub(&self.v1_pids)?;
        let v1_cpu = sub(&self.v1_cpu)?;
        if let Some(dir) = &v2 {
            if self.v2_memory {
                write(&dir.join("memory.max"), &memory)?;
                write(&dir.join("memory.swap.max"), "0").ok();
            }
            if self.v2_pids {
                write(&dir.join("pids.max"), &pids)?;
            }
            if self.v2_cpu {
                write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            }
        }
        cg.v2_dir = v2;
        if let Some(dir) = v1_memory {
            write(&dir.join("memory.limit_in_bytes"), &memory)?;
            // Best effort: memsw exists only with swap accounting.
            write(&dir.join("memory.memsw.limit_in_bytes"), &memory).ok();
        }
        if let Some(dir) = v1_pids {
            write(&dir.join("pids.max"), &pids)?;
        }
        if let Some(dir) = v1_cpu {
            write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        Ok(())
    }

    /// Sandbox `id`'s cgroup directories as [`Layout::create`] makes them, in every hierarchy
    /// used (whether or not each exists yet): what undoing a creation removes.
    pub fn existing(&self, id: &str) -> SandboxCgroup {
        SandboxCgroup {
            dirs: self.parents().map(|p| p.join(id)).collect(),
            v2_dir: self.v2.as_ref().map(|v| v.join(id)),
        }
    }

    /// The ids of the sandbox cgroups a previous run left, in any hierarchy.
    pub fn leftovers(&self) -> std::collections::BTreeSet<String> {
        let entries = self
            .parents()
            .filter_map(|p| std::fs::read_dir(p).ok())
            .flatten();
        entries
            .flatten()
            .filter(|e| e.path().is_dir() && e.file_name() != "supervisor")
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// Removes the instance's parent directories made by [`Layout::prepare`], where they are
    /// empty (at shutdown, after the last sandbox is gone): a stopped helper leaves no
    /// `<instance>` cgroup behind. A parent that still has children stays, quietly.
    pub fn remove_parents(&self) {
        for dir in self.parents() {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::debug!(dir = %dir.display(), "cgroup parent stays: {e}"),
            }
        }
    }
}

impl SandboxCgroup {
    /// `cgroup.procs` of every directory, opened for writing: the launcher writes "0" to each
    /// in the child before exec, so every process of the sandbox starts inside.
    pub fn procs_files(&self) -> Result<Vec<File>, CgroupError> {
        self.dirs
            .iter()
            .map(|d| {
                let p = d.join("cgroup.procs");
                File::options().write(true).open(&p).map_err(|e| err(&p, e))
            })
            .collect()
    }

    /// SIGKILLs every process in the cgroup: `cgroup.kill` on v2, else each listed pid.
    pub fn kill(&self) {
        if let Some(v2) = &self.v2_dir {
            if write(&v2.join("cgroup.kill"), "1").is_ok() {
                return;
            }
        }
        for dir in &self.dirs {
            for pid in pids_in(dir) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Waits (briefly) until the cgroups are empty, then removes them; a directory that stays
    /// is reported (the others are still removed).
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut result = Ok(());
        for dir in self.dirs.iter().rev() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => {
                        result = Err(err(dir, format!("cannot remove: {e}")));
                        break;
                    }
                }
            }
        }
        result
    }
}

fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|e| err(path, e))
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    File::options()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| err(path, e))
}
