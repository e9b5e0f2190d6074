//! The sandbox init's command line (`sandbox_init::args`), the contract between the root
//! helper, which renders it, and the sandbox's first process, which parses it.
//!
//! Properties: `parse(render(x)) == x` for every valid `Args` (any server argv, `--` and
//! non-UTF-8 included); a hostile argv is parsed exactly as an independent oracle of the
//! grammar says (options before `--`, each at most once, a decimal port in 1..=65535, a
//! non-empty program after `--`) and refused otherwise, with a one-line error.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use arbitrary::{Result, Unstructured};
use sandbox_init::args::{Args, parse};

use crate::{Target, pick};

pub const TARGET: Target = Target {
    name: "init_args",
    check,
    ci_cases: 20_000,
};

/// Words an attacker (or a confused helper) might put on the command line.
const WORDS: &[&str] = &[
    "--",
    "--proxy-port",
    "--transparent",
    "--data",
    "--allow-degraded-landlock",
    "--proxy-port=3128",
    "--data=1",
    "-",
    "---",
    "--Data",
    "3128",
    "0",
    "65535",
    "65536",
    "+80",
    " 80",
    "08080",
    "",
    "/bin/sh",
    "node",
];

fn word(u: &mut Unstructured<'_>) -> Result<OsString> {
    Ok(match u.int_in_range(0..=5)? {
        0 => OsString::from_vec(pick::bytes(u, 12)?),
        1 => OsString::from(u.int_in_range(0..=70_000u32)?.to_string()),
        _ => OsString::from(*u.choose(WORDS)?),
    })
}

fn valid_args(u: &mut Unstructured<'_>) -> Result<Args> {
    let mut server = vec![word(u)?];
    if server[0].is_empty() {
        server[0] = OsString::from("/srv/server");
    }
    for _ in 0..u.int_in_range(0..=6)? {
        server.push(word(u)?);
    }
    Ok(Args {
        proxy_port: u.int_in_range(1..=u16::MAX)?,
        transparent: u.arbitrary()?,
        data: u.arbitrary()?,
        allow_degraded_landlock: u.arbitrary()?,
        server,
    })
}

/// The grammar, stated independently of `args.rs`: what `argv` means, or `None` if refused.
fn oracle(argv: &[OsString]) -> Option<Args> {
    let sep = argv.iter().position(|a| a.as_bytes() == b"--")?;
    let (options, server) = (&argv[..sep], &argv[sep + 1..]);
    let (mut port, mut transparent, mut data, mut degraded) = (None, false, false, false);
    let mut i = 0;
    while i < options.len() {
        let once = |seen: &mut bool| (!std::mem::replace(seen, true)).then_some(());
        match options[i].as_bytes() {
            b"--transparent" => once(&mut transparent)?,
            b"--data" => once(&mut data)?,
            b"--allow-degraded-landlock" => once(&mut degraded)?,
            b"--proxy-port" if port.is_none() => {
                i += 1;
                let v = options.get(i)?.as_bytes();
                let digits = !v.is_empty() && v.len() <= 5 && v.iter().all(u8::is_ascii_digit);
                let n: u32 = std::str::from_utf8(v)
                    .ok()
                    .filter(|_| digits)?
                    .parse()
                    .ok()?;
                port = Some(u16::try_from(n).ok().filter(|&p| p != 0)?);
            }
            _ => return None,
        }
        i += 1;
    }
    if server.first().is_none_or(|p| p.is_empty()) {
        return None;
    }
    Some(Args {
        proxy_port: port?,
        transparent,
        data,
        allow_degraded_landlock: degraded,
        server: server.to_vec(),
    })
}

/// A hostile command line: a valid one with a few words inserted, repeated, dropped or
/// replaced (an option twice, a value gone, junk before `--`), or words in any order.
fn hostile(u: &mut Unstructured<'_>) -> Result<Vec<OsString>> {
    if u.ratio(1, 4)? {
        return (0..u.int_in_range(0..=10)?).map(|_| word(u)).collect();
    }
    let mut argv = valid_args(u)?.to_args();
    for _ in 0..u.int_in_range(1..=3)? {
        let at = u.choose_index(argv.len())?;
        match u.int_in_range(0..=3)? {
            0 => argv.insert(at, word(u)?),
            1 => argv.insert(at, argv[at].clone()),
            2 => drop(argv.remove(at)),
            _ => argv[at] = word(u)?,
        }
        if argv.is_empty() {
            break;
        }
    }
    Ok(argv)
}

fn check(u: &mut Unstructured<'_>) -> Result<()> {
    let args = valid_args(u)?;
    assert_eq!(
        parse(args.to_args()).as_ref(),
        Ok(&args),
        "parse(render(x)) != x"
    );

    let argv = hostile(u)?;
    let parsed = parse(argv.clone());
    let expected = oracle(&argv);
    match (&parsed, &expected) {
        (Ok(a), Some(e)) => {
            assert_eq!(a, e, "{argv:?} parsed differently from the grammar");
            assert_eq!(parse(a.to_args()).as_ref(), Ok(a), "re-rendered {argv:?}");
        }
        (Err(err), None) => {
            let text = err.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "error {text:?}");
        }
        _ => panic!("{argv:?}: parse gave {parsed:?}, the grammar says {expected:?}"),
    }
    Ok(())
}
