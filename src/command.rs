//! One client request understood: which command it is (from the command table), whether its
//! arity is right, where its keys are, and which slot they hash to.
//!
//! Everything here is pure and works on a parsed [`Request`]; it never does I/O and never
//! allocates for a command with up to eight keys.

pub mod multi;
pub mod table;

use smallvec::SmallVec;

use crate::protocol::Request;
use crate::router::key_slot;
pub use table::{CommandSpec, Entry, Local, Merge, Route, Table, Txn, flags};

/// Argument positions of a request's keys.
pub type KeyPositions = SmallVec<[u32; 8]>;

/// Why a request is answered with an error before it reaches any backend. `Display` gives the
/// exact error line (without the leading `-`) that Redis would send.
///
/// Names and arguments the client sent are kept as bytes: the client gets them back as Redis
/// echoes them ([`Rejection::wire`]), not as replacement characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(
        "ERR unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(name),
        String::from_utf8_lossy(args)
    )]
    UnknownCommand { name: Vec<u8>, args: Vec<u8> },
    #[error(
        "ERR unknown subcommand '{}'. Try {container} HELP.",
        String::from_utf8_lossy(sub)
    )]
    UnknownSubcommand { sub: Vec<u8>, container: String },
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(String),
    #[error(
        "CROSSSLOT Keys in request don't hash to the same slot (slots {slots}); put the keys in one slot with a {{hash tag}}"
    )]
    CrossSlot { slots: String },
    #[error("ERR '{name}' is not supported by slotgate: {reason}")]
    Refused { name: String, reason: &'static str },
}

impl Rejection {
    /// The error line as the client gets it (without `-` and CRLF): the bytes it sent, as
    /// Redis prints them with `%.128s` (up to 128 bytes, up to a NUL).
    pub fn wire(&self) -> Vec<u8> {
        match self {
            Rejection::UnknownCommand { name, args } => [
                &b"ERR unknown command '"[..],
                name,
                b"', with args beginning with: ",
                args,
            ]
            .concat(),
            Rejection::UnknownSubcommand { sub, container } => [
                &b"ERR unknown subcommand '"[..],
                sub,
                b"'. Try ",
                container.as_bytes(),
                b" HELP.",
            ]
            .concat(),
            other => other.to_string().into_bytes(),
        }
    }
}

/// Up to `max` bytes of `b`, ending at its first NUL, as C's `%.*s` prints them.
fn c_str(b: &[u8], max: usize) -> &[u8] {
    let b = b.get(..b.len().min(max)).unwrap_or_default();
    b.split(|&c| c == 0).next().unwrap_or_default()
}

/// How Redis names a command in its errors: `CLIENT INFO` for the subcommand `client|info`.
pub fn display_name(name: &str) -> String {
    match name.split_once('|') {
        Some((c, s)) => format!("{} {}", c.to_ascii_uppercase(), s.to_ascii_uppercase()),
        None => name.to_string(),
    }
}

/// Finds the table entry for `req`, descending into subcommands, and checks its arity.
pub fn lookup<'t>(table: &'t Table, req: &Request) -> Result<&'t Entry, Rejection> {
    let name = req.arg(0).unwrap_or_default();
    let Some(entry) = table.get(name) else {
        let mut args = Vec::new();
        for i in 1..req.argc() {
            if args.len() >= 128 {
                break;
            }
            let room = 128 - args.len();
            args.push(b'\'');
            args.extend_from_slice(c_str(req.arg(i).unwrap_or_default(), room));
            args.extend_from_slice(b"' ");
        }
        return Err(Rejection::UnknownCommand {
            name: c_str(name, 128).to_vec(),
            args,
        });
    };
    let entry = if entry.has_subcommands() && req.argc() >= 2 {
        let sub = req.arg(1).unwrap_or_default();
        match entry.subcommand(sub) {
            Some(s) => s,
            None => {
                return Err(Rejection::UnknownSubcommand {
                    sub: c_str(sub, 128).to_vec(),
                    container: entry.spec.name.to_ascii_uppercase(),
                });
            }
        }
    } else {
        entry
    };
    check_arity(entry, req)
}

/// `entry` if `req` has an argument count its arity allows (and, for commands that take keys
/// with their values, whole groups of them), else Redis' arity error.
#[inline(always)]
pub fn check_arity<'t>(entry: &'t Entry, req: &Request) -> Result<&'t Entry, Rejection> {
    let arity = i64::from(entry.spec.arity);
    let argc = req.argc() as i64;
    if (arity > 0 && argc != arity) || argc < -arity {
        return Err(Rejection::WrongArity(entry.spec.name.to_string()));
    }
    if let Some((first, step)) = entry.groups
        && !(argc as u64)
            .saturating_sub(u64::from(first))
            .is_multiple_of(u64::from(step))
    {
        return Err(Rejection::WrongArity(entry.spec.name.to_string()));
    }
    Ok(entry)
}

/// The last command a session looked up, by its name as sent: pipelines repeat commands, and
/// comparing one word is cheaper than a table lookup. Names of up to 8 bytes (GET, SET, MGET,
/// EVALSHA, BZPOPMIN...) are remembered, packed into a word with their length. Containers
/// (CLIENT, CONFIG, ...) never are, since their subcommand decides the entry.
#[derive(Debug, Default)]
pub struct LastLookup {
    name: (u64, usize),
    entry: Option<&'static Entry>,
}

impl LastLookup {
    /// [`lookup`], answered from the last lookup when the name is the same bytes. Inlined into
    /// the session's dispatch, whose every request starts here.
    #[inline(always)]
    pub fn lookup(
        &mut self,
        table: &'static Table,
        req: &Request,
    ) -> Result<&'static Entry, Rejection> {
        let name = req.arg_word(0);
        if let Some(e) = self.entry
            && name == Some(self.name)
        {
            return check_arity(e, req);
        }
        let e = lookup(table, req)?;
        // A subcommand's entry (`client|list`) must not be remembered under its container's name.
        if let Some(name) = name
            && !e.has_subcommands()
            && !e.spec.name.contains('|')
        {
            self.name = name;
            self.entry = Some(e);
        }
        Ok(e)
    }
}

/// Collects the argument positions of `req`'s keys following the entry's key specs, the way
/// Redis' `getKeysUsingKeySpecs` does. A spec that does not match the arguments yields no keys
/// (the backend then reports the syntax error itself).
pub fn key_positions(spec: &CommandSpec, req: &Request, out: &mut KeyPositions) {
    visit_keys(spec, req, |i, _| out.push(i));
}

/// The argument positions of `req`'s key names, as [`key_positions`] finds them but for names
/// that are not keys (SPUBLISH's channel): what key families rewrite. A position found by two
/// key specs is given once.
pub fn key_name_positions(spec: &CommandSpec, req: &Request, out: &mut KeyPositions) {
    visit_keys(spec, req, |i, ks| {
        if ks.access & table::keyspec::NOT_KEY == 0 && !out.contains(&i) {
            out.push(i);
        }
    });
}

/// What a command does to each of its keys, for ACL key patterns by access: argument positions
/// with [`table::keyspec`] `READ`/`WRITE` bits, as Redis' ACL check gets them
/// (`getKeysFromCommandWithSpecs`): names that are not keys (SPUBLISH's channel) left out, and
/// the access of SET and BITFIELD, whose key specs say `variable_flags`, read from their
/// arguments as Redis' `setGetKeys` and `bitfieldGetKeys` do.
pub fn key_access(entry: &Entry, req: &Request, out: &mut SmallVec<[(u32, u8); 8]>) {
    use table::keyspec::{NOT_KEY, READ, VARIABLE, WRITE};
    if let Some((i, access)) = single_key_access(entry, req) {
        out.push((i as u32, access));
        return;
    }
    visit_keys(entry.spec, req, |i, ks| {
        if ks.access & NOT_KEY != 0 {
            return;
        }
        let access = if ks.access & VARIABLE == 0 {
            ks.access
        } else {
            match entry.spec.name {
                // SET ... GET reads the old value; a plain SET only writes.
                "set"
                    if (3..req.argc())
                        .any(|j| req.arg(j).is_some_and(|a| a.eq_ignore_ascii_case(b"GET"))) =>
                {
                    READ | WRITE
                }
                "set" => WRITE,
                "bitfield" if bitfield_reads_only(req) => READ,
                _ => ks.access,
            }
        };
        out.push((i, access & (READ | WRITE)));
    });
}

/// GET, HGET...: the one key of a command whose one key spec names it at a fixed place and
/// says what is done to it, without the key-spec walk: its position and access. `None` for
/// other commands, which [`key_access`] walks.
#[inline]
pub fn single_key_access(entry: &Entry, req: &Request) -> Option<(usize, u8)> {
    entry.single_key_access.filter(|&(i, _)| req.argc() > i)
}

/// Whether a BITFIELD only reads (GET and OVERFLOW subcommands, well formed), as Redis'
/// `bitfieldGetKeys` decides: anything else, a syntax error included, counts as a write.
fn bitfield_reads_only(req: &Request) -> bool {
    let argc = req.argc();
    let mut i = 2;
    while i < argc {
        let rest = argc - i - 1;
        let arg = req.arg(i).unwrap_or_default();
        if arg.eq_ignore_ascii_case(b"GET") && rest >= 2 {
            i += 3;
        } else if arg.eq_ignore_ascii_case(b"OVERFLOW") && rest >= 1 {
            i += 2;
        } else {
            return false;
        }
    }
    true
}

/// Calls `f` with the argument position of each of `req`'s keys and the key spec that names it.
fn visit_keys(spec: &CommandSpec, req: &Request, mut f: impl FnMut(u32, &table::KeySpec)) {
    use table::{BeginSearch, FindKeys};
    let argc = req.argc() as i64;
    for ks in spec.key_specs {
        let first = match ks.begin {
            BeginSearch::Index(i) => i64::from(i),
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => {
                let start_from = i64::from(start_from);
                let (mut i, end, step) = if start_from > 0 {
                    (start_from, argc - 1, 1)
                } else {
                    (argc + start_from, 1, -1)
                };
                let mut found = None;
                while (step > 0 && i <= end) || (step < 0 && i >= end) {
                    if i < 1 || i >= argc {
                        break;
                    }
                    if req
                        .arg(i as usize)
                        .is_some_and(|a| a.eq_ignore_ascii_case(keyword.as_bytes()))
                    {
                        found = Some(i + 1);
                        break;
                    }
                    i += step;
                }
                match found {
                    Some(f) => f,
                    None => continue,
                }
            }
            BeginSearch::Unknown => continue,
        };
        let (first, last, step) = match ks.find {
            FindKeys::Range {
                last_key,
                step,
                limit,
            } => {
                let last_key = i64::from(last_key);
                let last = if last_key >= 0 {
                    first + last_key
                } else if limit == 0 {
                    argc + last_key
                } else {
                    first + ((argc - first) / i64::from(limit) + last_key)
                };
                (first, last, i64::from(step))
            }
            FindKeys::KeyNum {
                key_num_idx,
                first_key,
                step,
            } => {
                let idx = first + i64::from(key_num_idx);
                if idx >= argc {
                    continue;
                }
                let Some(n) = req
                    .arg(idx as usize)
                    .and_then(crate::protocol::parse_int)
                    .filter(|&n| n >= 0)
                else {
                    continue;
                };
                let first = first + i64::from(first_key);
                let step = i64::from(step).max(1);
                (first, first + (n - 1) * step, step)
            }
            FindKeys::Unknown => continue,
        };
        if last >= argc || last < first || first >= argc || step <= 0 {
            continue;
        }
        let mut i = first;
        while i <= last {
            f(i as u32, ks);
            i += step;
        }
    }
}

/// The slots of a request's keys, in key order.
pub type KeySlots = SmallVec<[u16; 8]>;

/// The keys of a request hash to more than one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossSlot;

/// Puts the slot of each key of `req` (at `keys`) in `slots` and returns the one slot they all
/// share (`None` for a request without keys), or [`CrossSlot`]. Each key is hashed once, and
/// nothing is allocated for up to 8 keys.
pub fn key_slots(
    req: &Request,
    keys: &[u32],
    slots: &mut KeySlots,
) -> Result<Option<u16>, CrossSlot> {
    slots.clear();
    let mut cross = false;
    for &k in keys {
        let s = key_slot(req.arg(k as usize).unwrap_or_default());
        cross |= slots.first().is_some_and(|&first| first != s);
        slots.push(s);
    }
    if cross {
        Err(CrossSlot)
    } else {
        Ok(slots.first().copied())
    }
}

/// The one slot every key of `req` hashes to, `None` for a request without keys, or the
/// CROSSSLOT rejection naming the distinct slots.
pub fn common_slot(req: &Request, keys: &[u32]) -> Result<Option<u16>, Rejection> {
    let mut slots = KeySlots::new();
    key_slots(req, keys, &mut slots).map_err(|CrossSlot| cross_slot(&slots))
}

/// The CROSSSLOT rejection for keys in `slots`, naming the first distinct slots.
pub fn cross_slot(slots: &[u16]) -> Rejection {
    let mut seen: SmallVec<[u16; 8]> = SmallVec::new();
    for &s in slots {
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    let mut slots = String::new();
    for (i, s) in seen.iter().take(8).enumerate() {
        if i > 0 {
            slots.push_str(", ");
        }
        slots.push_str(&s.to_string());
    }
    if seen.len() > 8 {
        slots.push_str(", ...");
    }
    Rejection::CrossSlot { slots }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_answer_repeated_lookups_like_the_table() {
        let table: &'static Table = Box::leak(Box::new(Table::redis70()));
        let mut last = LastLookup::default();
        let name = |args: &[&str], last: &mut LastLookup| match last
            .lookup(table, &Request::from_args(args))
        {
            Ok(e) => e.spec.name.to_string(),
            Err(e) => e.to_string(),
        };
        assert_eq!(name(&["GET", "k"], &mut last), "get");
        assert_eq!(name(&["GET", "k"], &mut last), "get");
        assert!(name(&["GET"], &mut last).contains("wrong number of arguments"));
        assert_eq!(name(&["CLIENT", "LIST"], &mut last), "client|list");
        assert_eq!(name(&["CLIENT", "GETNAME"], &mut last), "client|getname");
        assert!(name(&["CLIENT", "NOPE"], &mut last).contains("unknown subcommand"));
        assert_eq!(name(&["set", "k", "v"], &mut last), "set");
        assert!(name(&["NOPE"], &mut last).contains("unknown command"));
    }

    #[test]
    fn should_refuse_keys_without_their_values_as_redis_does() {
        let table = Table::redis70();
        let check = |args: &[&str]| lookup(&table, &Request::from_args(args)).map(|e| e.spec.name);
        for name in ["MSET", "MSETNX"] {
            let lower = name.to_ascii_lowercase();
            let err = format!("ERR wrong number of arguments for '{lower}' command");
            assert_eq!(check(&[name, "a", "1"]), Ok(&*lower.leak()));
            for bad in [
                &[name, "a"][..],
                &[name, "a", "1", "b"],
                &[name, "a", "1", "b", "2", "c"],
            ] {
                assert_eq!(
                    check(bad).map_err(|e| e.to_string()),
                    Err(err.clone()),
                    "{bad:?}"
                );
            }
        }
        // Commands without value groups keep Redis' plain arity rule.
        assert!(check(&["MGET", "a", "b", "c"]).is_ok());
        assert!(check(&["DEL", "a", "b", "c"]).is_ok());
    }

    #[test]
    fn should_take_value_groups_only_from_commands_whose_key_spec_has_them() {
        let table = Table::redis70();
        let groups = |n: &[u8]| table.get(n).and_then(|e| e.groups);
        assert_eq!(groups(b"mset"), Some((1, 2)));
        assert_eq!(groups(b"msetnx"), Some((1, 2)));
        assert_eq!(groups(b"mget"), None);
        assert_eq!(groups(b"xread"), None);
        assert_eq!(groups(b"get"), None);
    }

    fn keys_of(args: &[&str]) -> Vec<String> {
        let table = Table::redis70();
        let req = Request::from_args(args);
        let entry = lookup(&table, &req).unwrap_or_else(|e| panic!("{e}"));
        let mut pos = KeyPositions::new();
        key_positions(entry.spec, &req, &mut pos);
        pos.iter().map(|&p| args[p as usize].to_string()).collect()
    }

    #[test]
    fn should_find_keys_of_fixed_position_commands() {
        assert_eq!(keys_of(&["GET", "a"]), ["a"]);
        assert_eq!(keys_of(&["set", "a", "1", "EX", "10"]), ["a"]);
        assert_eq!(keys_of(&["MSET", "a", "1", "b", "2"]), ["a", "b"]);
        assert_eq!(keys_of(&["DEL", "a", "b", "c"]), ["a", "b", "c"]);
        assert_eq!(keys_of(&["OBJECT", "ENCODING", "k"]), ["k"]);
        assert_eq!(keys_of(&["RENAME", "a", "b"]), ["a", "b"]);
    }

    #[test]
    fn should_find_keys_of_numkeys_commands() {
        assert_eq!(
            keys_of(&["EVAL", "return 1", "2", "a", "b", "x"]),
            ["a", "b"]
        );
        assert_eq!(keys_of(&["EVAL", "return 1", "0"]), Vec::<String>::new());
        assert_eq!(
            keys_of(&["ZUNIONSTORE", "d", "2", "a", "b"]),
            ["d", "a", "b"]
        );
    }

    #[test]
    fn should_find_keys_after_keywords() {
        assert_eq!(
            keys_of(&["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"]),
            ["s1", "s2"]
        );
    }

    #[test]
    fn should_reject_unknown_commands_like_redis() {
        let table = Table::redis70();
        let e = lookup(&table, &Request::from_args(&["foo", "a", "b"])).err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("ERR unknown command 'foo', with args beginning with: 'a' 'b' ".to_string())
        );
        let e = lookup(&table, &Request::from_args(&["object", "nope", "k"])).err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("ERR unknown subcommand 'nope'. Try OBJECT HELP.".to_string())
        );
        let e = lookup(&table, &Request::from_args(&["get"])).err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("ERR wrong number of arguments for 'get' command".to_string())
        );
        let e = lookup(&table, &Request::from_args(&["object", "encoding"])).err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("ERR wrong number of arguments for 'object|encoding' command".to_string())
        );
    }

    #[test]
    fn should_report_crossslot_with_the_slots() {
        let req = Request::from_args(&["RENAME", "foo", "bar"]);
        assert_eq!(
            common_slot(&req, &[1, 2]).err().map(|e| e.to_string()),
            Some("CROSSSLOT Keys in request don't hash to the same slot (slots 12182, 5061); put the keys in one slot with a {hash tag}".to_string())
        );
        let req = Request::from_args(&["RENAME", "{u}a", "{u}b"]);
        assert!(matches!(common_slot(&req, &[1, 2]), Ok(Some(_))));
    }
}
