//! Every kill rule of `seccomp/policy.json` on the real kernel, not only in the BPF interpreter
//! (`seccomp_policy.rs`): the cases are generated from the policy file itself, so a rule added
//! there is tested here without anyone writing a case.
//!
//! For each kill rule, a child of the probe (under the real `gigmcp-sandbox-init`, in a sandbox
//! as uid 65534) makes that syscall with arguments that match the rule, the unconstrained ones
//! random, and must die by SIGSYS; for each conditional rule, the same call with one condition
//! flipped so that no rule of that syscall matches must survive. The same calls made with the
//! x32 bit in the number, and calls through the i386 entry (`int 0x80` from the 64-bit probe,
//! which the kernel runs as AUDIT_ARCH_I386), must die too. The control runs the same cases in
//! the same sandbox without init: none may die by SIGSYS there. Needs root.

use serde_json::Value;
use testkit::init::*;

/// The filter a rule's policy entry belongs to.
const KILL: &str = "kill";

/// An argument condition, as seccompiler reads it: only the ops the policy uses (a new one in
/// the policy fails [`Cond::parse`] until this test learns it).
#[derive(Debug, Clone, Copy)]
enum Op {
    Eq,
    Ne,
    MaskedEq(u32),
}

/// `(arg[index] as u32) <op> val` (every condition of the policy is a `dword`: the kernel reads
/// an int, so the high half of the register is the caller's to choose and must not matter).
#[derive(Debug, Clone, Copy)]
struct Cond {
    index: usize,
    op: Op,
    val: u32,
}

impl Cond {
    fn parse(c: &Value) -> Self {
        assert_eq!(
            c["type"], "dword",
            "only dword conditions are generated: {c}"
        );
        let op = match &c["op"] {
            Value::String(s) if s == "eq" => Op::Eq,
            Value::String(s) if s == "ne" => Op::Ne,
            Value::Object(o) if o.contains_key("masked_eq") => Op::MaskedEq(word(&o["masked_eq"])),
            other => panic!("teach seccomp_kernel.rs the op {other}"),
        };
        Cond {
            index: usize::try_from(c["index"].as_u64().expect("index")).expect("index"),
            op,
            val: word(&c["val"]),
        }
    }

    fn holds(&self, args: &[u64; 6]) -> bool {
        let lo = args[self.index] as u32;
        match self.op {
            Op::Eq => lo == self.val,
            Op::Ne => lo != self.val,
            Op::MaskedEq(mask) => lo & mask == self.val,
        }
    }

    /// The argument changed so that this condition no longer holds.
    fn flipped(&self, args: &[u64; 6]) -> [u64; 6] {
        let mut out = *args;
        let high = args[self.index] & !0xffff_ffff;
        out[self.index] = high
            | u64::from(match self.op {
                Op::Eq => self.val.wrapping_add(1),
                Op::Ne => self.val,
                Op::MaskedEq(mask) => (args[self.index] as u32) & !mask,
            });
        out
    }
}

fn word(v: &Value) -> u32 {
    u32::try_from(v.as_u64().expect("a number")).expect("a 32-bit value")
}

/// One entry of the kill filter.
#[derive(Debug)]
struct Rule {
    syscall: String,
    conds: Vec<Cond>,
}

impl Rule {
    fn matches(&self, args: &[u64; 6]) -> bool {
        self.conds.iter().all(|c| c.holds(args))
    }

    /// Arguments that match every condition; random where no condition looks, and random in
    /// the high half of every argument a condition reads.
    fn matching_args(&self) -> [u64; 6] {
        let mut args = [0u64; 6];
        if self.conds.is_empty() {
            return args.map(|_| random_u64());
        }
        for c in &self.conds {
            args[c.index] = random_u64() & !0xffff_ffff;
        }
        for c in &self.conds {
            let lo = args[c.index] as u32;
            let lo = match c.op {
                Op::Eq => c.val,
                Op::MaskedEq(mask) => (lo & !mask) | c.val,
                Op::Ne => lo,
            };
            args[c.index] = (args[c.index] & !0xffff_ffff) | u64::from(lo);
        }
        // `ne` last: a random low half that every `ne` on that argument allows.
        for c in self.conds.iter().filter(|c| matches!(c.op, Op::Ne)) {
            while !self.conds.iter().all(|c| c.holds(&args)) {
                args[c.index] = (args[c.index] & !0xffff_ffff) | (random_u64() & 0xffff_ffff);
            }
        }
        assert!(self.matches(&args), "{self:?} {args:x?}");
        args
    }
}

/// The kill filter's rules, in policy order.
fn kill_rules() -> Vec<Rule> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../seccomp/policy.json");
    let text = std::fs::read_to_string(path).expect("read seccomp/policy.json");
    let policy: Value = serde_json::from_str(&text).expect("policy.json is JSON");
    policy[KILL]["filter"]
        .as_array()
        .expect("kill.filter")
        .iter()
        .map(|r| Rule {
            syscall: r["syscall"].as_str().expect("syscall").to_owned(),
            conds: r["args"]
                .as_array()
                .map(|a| a.iter().map(Cond::parse).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// What the case must do on the kernel under init's filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Killed,
    Survives,
}

/// One call the probe makes in a child of its own.
#[derive(Debug)]
struct Case {
    what: String,
    /// `[i]nr,a0,...,a5` as the probe's `each` reads it.
    spec: String,
    want: Want,
}

fn call(nr: u64, args: &[u64; 6]) -> String {
    let mut s = format!("{nr:#x}");
    for a in args {
        s.push_str(&format!(",{a:#x}"));
    }
    s
}

fn nr_of(name: &str) -> Option<u64> {
    match syscall_nr(name) {
        Some(nr) => Some(u64::try_from(nr).expect("nr")),
        None => {
            assert!(
                sandbox_init::seccomp::policy::ABSENT_ON_TARGET.contains(&name),
                "testkit::init::syscall_nr does not know {name}: add it"
            );
            None
        }
    }
}

/// Every case generated from the policy: kill, allow (where a flip exists) and x32 twins.
fn policy_cases(rules: &[Rule]) -> Vec<Case> {
    let mut cases = Vec::new();
    for rule in rules {
        let Some(nr) = nr_of(&rule.syscall) else {
            continue;
        };
        let args = rule.matching_args();
        let what = format!("{}{:x?}", rule.syscall, args);
        cases.push(Case {
            what: what.clone(),
            spec: call(nr, &args),
            want: Want::Killed,
        });
        cases.push(Case {
            what: format!("x32 {what}"),
            spec: call(nr | 0x4000_0000, &args),
            want: Want::Killed,
        });
        let same: Vec<&Rule> = rules.iter().filter(|r| r.syscall == rule.syscall).collect();
        let allowed = rule
            .conds
            .iter()
            .map(|c| c.flipped(&args))
            .find(|a| !same.iter().any(|r| r.matches(a)));
        if let Some(a) = allowed {
            cases.push(Case {
                what: format!("{}{:x?} (matches no rule)", rule.syscall, a),
                spec: call(nr, &a),
                want: Want::Survives,
            });
        }
    }
    cases
}

/// i386 numbers (arch/x86/entry/syscalls/syscall_32.tbl): allowed and killed ones alike, since
/// the arch check must refuse the whole entry path.
#[cfg(target_arch = "x86_64")]
const I386: &[(&str, u64)] = &[
    ("getpid", 20),
    ("mount", 21),
    ("ptrace", 26),
    ("socketcall", 102),
    ("keyctl", 288),
    ("unshare", 310),
];

#[cfg(target_arch = "x86_64")]
fn i386_cases() -> Vec<Case> {
    I386.iter()
        .map(|(name, nr)| Case {
            what: format!("i386 {name}"),
            spec: format!("i{nr}"),
            want: Want::Killed,
        })
        .collect()
}

#[cfg(not(target_arch = "x86_64"))]
fn i386_cases() -> Vec<Case> {
    Vec::new()
}

/// `case <n> killed <sig>` / `case <n> exited <code>` → per case, the signal it died of.
fn deaths(out: &str, n: usize) -> Vec<Option<i32>> {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), n, "one line per case: {out}");
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let rest = l
                .strip_prefix(&format!("case {i} "))
                .unwrap_or_else(|| panic!("line {i}: {l}"));
            match rest.split_once(' ') {
                Some(("killed", sig)) => Some(sig.parse().expect("signal")),
                Some(("exited", _)) => None,
                _ => panic!("line {i}: {l}"),
            }
        })
        .collect()
}

fn probe_each(cases: &[Case]) -> Vec<String> {
    let mut argv = vec![PROBE_IN_SANDBOX.to_owned(), "each".to_owned()];
    argv.extend(cases.iter().map(|c| c.spec.clone()));
    argv
}

#[test]
fn every_kill_rule_kills_on_the_real_kernel_and_its_complement_survives() {
    if !testkit::require_root(
        "every_kill_rule_kills_on_the_real_kernel_and_its_complement_survives",
    ) {
        return;
    }
    let rules = kill_rules();
    let mut cases = policy_cases(&rules);
    cases.extend(i386_cases());
    // Every rule the target has, twice (plain and x32), and the i386 calls.
    let present = rules
        .iter()
        .filter(|r| syscall_nr(&r.syscall).is_some())
        .count();
    let kills = cases.iter().filter(|c| c.want == Want::Killed).count();
    assert_eq!(kills, 2 * present + i386_cases().len(), "kill cases");
    eprintln!("{} cases: {kills} must die, the rest survive", cases.len());
    let argv = probe_each(&cases);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();

    // Control: the same calls without init's filters; none dies by SIGSYS (the sandbox alone
    // refuses them with an errno, or they are harmless).
    let control = sandboxed(&Binds::default(), &argv);
    for (case, death) in cases.iter().zip(deaths(&assert_ran(&control), cases.len())) {
        assert_ne!(death, Some(SIGSYS), "control: {}", case.what);
    }

    let mut server = vec!["--proxy-port", "3128", "--"];
    server.extend(&argv);
    let mut init_argv = vec![INIT_IN_SANDBOX];
    init_argv.extend(server);
    let out = sandboxed(&Binds::default(), &init_argv);
    let mut wrong = Vec::new();
    for (case, death) in cases.iter().zip(deaths(&assert_ran(&out), cases.len())) {
        let got = match death {
            Some(SIGSYS) => Want::Killed,
            None => Want::Survives,
            Some(other) => panic!("{}: killed by signal {other}", case.what),
        };
        if got != case.want {
            wrong.push(format!("{}: {got:?}, want {:?}", case.what, case.want));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cases wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_i386_entry_path_is_killed() {
    if !testkit::require_root("the_i386_entry_path_is_killed") {
        return;
    }
    // Control: the kernel has the i386 entry (IA32 emulation) and a 64-bit process may use it.
    let control = sandboxed(&Binds::default(), &[PROBE_IN_SANDBOX, "i386", "20"]);
    assert_eq!(assert_ran(&control), "i386 ok\n", "int 0x80 getpid");
    let out = sandboxed_init(
        &Binds::default(),
        3128,
        &[],
        &[PROBE_IN_SANDBOX, "i386", "20"],
    );
    assert_sigsys_in_sandbox(&out, "int 0x80 getpid under init");
}
