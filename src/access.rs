//! Who may use slotgate and what each user may run: the `default` user (with `requirepass`, or
//! rules of its own) and proxy users configured with Redis' own ACL rule syntax (`on >secret
//! +@read -get ~* &*`), and the answers Redis 7.0 gives to `AUTH`, `HELLO ... AUTH` and to a
//! command a user may not run.
//!
//! Decisions are pure functions of the configuration, the command table and what a client
//! sent. A password is kept as its SHA-256 digest, compared in constant time, and must never
//! reach a log line, an error or a `Debug` print (`ACL LIST` shows the digest, as Redis does).
//! Key and channel patterns use Redis' glob; key patterns by access (`%R~`, `%W~`) are checked
//! against what the command's key specs say it does to each key. Selectors (`(...)`) are
//! refused when the rules are read, never half applied.

use ring::digest::{SHA256, digest};

use crate::backend::Secret;
use crate::command::Table;
use crate::command::table::AclEntry;
use crate::command::table::cat;
use crate::command::table::keyspec::{READ, WRITE};

/// The access a `~pattern` grants: read and write.
const READ_WRITE: u8 = READ | WRITE;

/// `-NOAUTH` for a command sent before authenticating.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// `-NOAUTH` for a `HELLO` without `AUTH` before authenticating.
pub const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// `AUTH <password>` when the `default` user has no password.
pub const NO_PASSWORD_SET: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
/// A command on keys the user may not touch.
pub const NOPERM_KEYS: &str =
    "NOPERM this user has no permissions to access one of the keys used as arguments";
/// A pub/sub command on channels the user may not use.
pub const NOPERM_CHANNELS: &str =
    "NOPERM this user has no permissions to access one of the channels used as arguments";

/// A user as configured: its name and its rules, in Redis' ACL syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRules {
    pub name: String,
    pub rules: String,
}

/// Which keys (or channels) a user may use: all, or those matching one of its glob patterns
/// (none when it has no pattern), each for reading, writing or both (channels: both).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    All,
    Patterns(Vec<Grant>),
}

/// One pattern and the access it grants ([`READ`], [`WRITE`] bits).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    pattern: Pattern,
    access: u8,
}

/// A glob pattern as written, with the usual shapes recognised once, when the rules are read:
/// a prefix (`app:*`, matched by its text before the star) or a literal costs one comparison per
/// key instead of a glob walk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// The pattern as written.
    source: Vec<u8>,
    shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `app:*` with at most 8 bytes before the star: those bytes as a little-endian word, the
    /// mask of their bits, and their count. A key of 8 bytes or more is checked with one load.
    ShortPrefix {
        word: u64,
        mask: u64,
        len: usize,
    },
    /// `app:*`: the text before the star.
    Prefix,
    /// No special character at all.
    Exact,
    Glob,
}

impl Pattern {
    fn new(p: &[u8]) -> Pattern {
        let special = |b: &u8| matches!(b, b'*' | b'?' | b'[' | b'\\');
        let shape = match p.split_last() {
            Some((b'*', head)) if !head.iter().any(special) && head.len() <= 8 => {
                let mut bytes = [0u8; 8];
                for (b, h) in bytes.iter_mut().zip(head) {
                    *b = *h;
                }
                let mask = if head.len() == 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * head.len())) - 1
                };
                Shape::ShortPrefix {
                    word: u64::from_le_bytes(bytes),
                    mask,
                    len: head.len(),
                }
            }
            Some((b'*', head)) if !head.iter().any(special) => Shape::Prefix,
            _ if !p.iter().any(special) => Shape::Exact,
            _ => Shape::Glob,
        };
        Pattern {
            source: p.to_vec(),
            shape,
        }
    }

    fn source(&self) -> &[u8] {
        &self.source
    }

    #[inline(always)]
    fn matches(&self, name: &[u8]) -> bool {
        match self.shape {
            Shape::ShortPrefix { word, mask, len } => match name.first_chunk::<8>() {
                Some(chunk) => u64::from_le_bytes(*chunk) & mask == word,
                None => name.get(..len) == self.source.get(..len),
            },
            Shape::Prefix => {
                let head = self.source.split_last().map_or(&[][..], |(_, h)| h);
                name.starts_with(head)
            }
            Shape::Exact => name == self.source.as_slice(),
            Shape::Glob => glob_match(&self.source, name),
        }
    }
}

impl Reach {
    const NONE: Reach = Reach::Patterns(Vec::new());

    /// Adds a pattern, as Redis does: after `*` (all) it is an error; a pattern already there
    /// gains the new access in its place.
    fn add(&mut self, pattern: &str, access: u8) -> Result<(), ()> {
        let Reach::Patterns(grants) = self else {
            return Err(());
        };
        let pattern = Pattern::new(pattern.as_bytes());
        match grants.iter_mut().find(|g| g.pattern == pattern) {
            Some(g) => g.access |= access,
            None => grants.push(Grant { pattern, access }),
        }
        Ok(())
    }

    /// Whether `name` matches a pattern that grants all of `need` (a key's [`READ`]/[`WRITE`]
    /// use; a channel's is [`READ_WRITE`]), as Redis' `ACLSelectorCheckKey`.
    #[inline(always)]
    fn admits(&self, name: &[u8], need: u8) -> bool {
        match self {
            Reach::All => true,
            Reach::Patterns(p) => {
                // The first pattern is the usual hit (`app:*`): tried before the loop is set up.
                let Some((first, rest)) = p.split_first() else {
                    return false;
                };
                if first.access & need == need && first.pattern.matches(name) {
                    return true;
                }
                rest.iter()
                    .any(|g| g.access & need == need && g.pattern.matches(name))
            }
        }
    }

    /// Whether a PSUBSCRIBE pattern is allowed: Redis wants it equal to one of the user's.
    fn admits_pattern(&self, pattern: &[u8]) -> bool {
        match self {
            Reach::All => true,
            Reach::Patterns(p) => p.iter().any(|x| x.pattern.source() == pattern),
        }
    }

    /// The patterns as `ACL LIST` writes them, each followed by a space: `~p`, `%R~p`, `%W~p`
    /// (`prefix` is `~` for keys and `&` for channels).
    fn describe(&self, prefix: &str, out: &mut String) {
        match self {
            Reach::All => {
                out.push_str(prefix);
                out.push_str("* ");
            }
            Reach::Patterns(grants) => {
                for g in grants {
                    match (prefix, g.access) {
                        ("~", READ) => out.push_str("%R~"),
                        ("~", WRITE) => out.push_str("%W~"),
                        _ => out.push_str(prefix),
                    }
                    out.push_str(&String::from_utf8_lossy(g.pattern.source()));
                    out.push(' ');
                }
            }
        }
    }
}

/// One element of a glob pattern.
enum Token<'p> {
    Star,
    Any,
    /// `[...]`: the bytes between the brackets, and whether it began with `^`.
    Class(&'p [u8], bool),
    Byte(u8),
}

/// The token at `i` of pattern `p` and where the next one starts (`None` at the end).
fn token_at(p: &[u8], i: usize) -> Option<(Token<'_>, usize)> {
    let c = *p.get(i)?;
    Some(match c {
        b'*' => {
            // Runs of stars match as one.
            let mut j = i + 1;
            while p.get(j) == Some(&b'*') {
                j += 1;
            }
            (Token::Star, j)
        }
        b'?' => (Token::Any, i + 1),
        b'\\' if i + 1 < p.len() => (Token::Byte(p.get(i + 1).copied().unwrap_or(b'\\')), i + 2),
        b'[' => {
            let start = i + 1;
            let negate = p.get(start) == Some(&b'^');
            let body = if negate { start + 1 } else { start };
            // As Redis: up to the next `]` not escaped, or the end of the pattern.
            let mut j = body;
            while let Some(&b) = p.get(j) {
                if b == b'\\' {
                    j += 2;
                } else if b == b']' {
                    break;
                } else {
                    j += 1;
                }
            }
            let class = p.get(body..j.min(p.len())).unwrap_or(&[]);
            (Token::Class(class, negate), j + 1)
        }
        _ => (Token::Byte(c), i + 1),
    })
}

fn class_has(body: &[u8], c: u8) -> bool {
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        if b == b'\\' {
            if body.get(i + 1) == Some(&c) {
                return true;
            }
            i += 2;
        } else if body.get(i + 1) == Some(&b'-') && i + 2 < body.len() {
            let (lo, hi) = (b, body.get(i + 2).copied().unwrap_or(b));
            let (lo, hi) = if lo > hi { (hi, lo) } else { (lo, hi) };
            if (lo..=hi).contains(&c) {
                return true;
            }
            i += 3;
        } else {
            if b == c {
                return true;
            }
            i += 1;
        }
    }
    false
}

/// Redis' glob (`stringmatchlen`, case-sensitive): `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`.
/// Iterative and allocation-free, backtracking only to the last star, so no pattern costs more
/// than pattern length times string length.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    // Positions in the pattern and the string; the last star's, to backtrack to.
    let (mut t, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        let tok = token_at(pattern, t);
        let step = match (&tok, s.get(i)) {
            // A star that ends the pattern matches whatever is left (`app:*`, the usual case).
            (Some((Token::Star, next)), _) if *next == pattern.len() => return true,
            (Some((Token::Star, next)), _) => {
                star = Some((*next, i));
                t = *next;
                continue;
            }
            (Some((Token::Any, _)), Some(_)) => true,
            (Some((Token::Class(body, negate), _)), Some(&c)) => class_has(body, c) != *negate,
            (Some((Token::Byte(b), _)), Some(&c)) => *b == c,
            (None, None) => return true,
            _ => false,
        };
        if step {
            t = tok.map_or(t, |(_, next)| next);
            i += 1;
        } else if let Some((after_star, si)) = star
            && si < s.len()
        {
            star = Some((after_star, si + 1));
            t = after_star;
            i = si + 1;
        } else {
            return false;
        }
    }
}

/// One user: whether it may log in, with what, and what it may run.
#[derive(Clone)]
pub struct User {
    pub name: String,
    enabled: bool,
    nopass: bool,
    /// `sanitize-payload` (`Some(true)`) or `skip-sanitize-payload`, as last set; shown by
    /// `ACL LIST` only (RESTORE payloads are checked by the nodes' own settings).
    sanitize: Option<bool>,
    passwords: Vec<[u8; 32]>,
    /// Allowed commands, by [`crate::command::Entry::id`].
    commands: Vec<bool>,
    /// Whether the command rules were last based on `+@all` (so `ACL LIST` starts with it)
    /// rather than `-@all`.
    future: bool,
    keys: Reach,
    channels: Reach,
    /// Every command, key and channel: no check is needed per request.
    unrestricted: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("unrestricted", &self.unrestricted)
            .finish_non_exhaustive()
    }
}

/// What `ACL GETUSER` shows of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDetails {
    pub flags: Vec<&'static str>,
    pub passwords: Vec<String>,
    pub commands: String,
    pub keys: String,
    pub channels: String,
}

/// Why a login was refused: the error Redis gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    WrongPass,
    /// `AUTH <password>` with no password set.
    NoPasswordSet,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::WrongPass => WRONGPASS,
            Refusal::NoPasswordSet => NO_PASSWORD_SET,
        }
    }
}

/// What a logged-in user's request is missing, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    Command,
    Keys,
    Channels,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Equal digests, in time that does not depend on where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The access and pattern of a `%R~pattern` rule (given without its `%`), as Redis reads it:
/// `R` and `W` at most once each, in any case, then `~`; without the `~` the pattern is empty.
/// `None` for anything else, and for no access at all (which Redis accepts and later cannot
/// describe).
fn key_access_prefix(spec: &str) -> Option<(u8, &str)> {
    let mut access = 0u8;
    let mut rest = spec;
    while let Some(c) = rest.bytes().next() {
        rest = rest.get(1..)?;
        match c.to_ascii_uppercase() {
            b'R' if access & READ == 0 => access |= READ,
            b'W' if access & WRITE == 0 => access |= WRITE,
            b'~' => break,
            _ => return None,
        }
    }
    (access != 0).then_some((access, rest))
}

/// `#<64 lowercase hex digits>` as Redis accepts it.
fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl User {
    /// A user as `ACL SETUSER` creates it: off, no password, no command, key or channel.
    fn new(name: &str, table: &Table) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            sanitize: None,
            passwords: Vec::new(),
            commands: vec![false; table.entry_count()],
            future: false,
            keys: Reach::NONE,
            channels: Reach::NONE,
            unrestricted: false,
        }
    }

    /// Redis' `default` user: on, no password, every command, key and channel.
    fn default_user(table: &Table) -> User {
        let mut u = User::new("default", table);
        u.enabled = true;
        u.nopass = true;
        u.commands.fill(true);
        u.future = true;
        u.keys = Reach::All;
        u.channels = Reach::All;
        u.refresh();
        u
    }

    fn refresh(&mut self) {
        self.unrestricted = self.keys == Reach::All
            && self.channels == Reach::All
            && self.commands.iter().all(|&a| a);
    }

    fn set(&mut self, ids: &[u16], allowed: bool) {
        for &id in ids {
            if let Some(c) = self.commands.get_mut(usize::from(id)) {
                *c = allowed;
            }
        }
    }

    /// Applies one rule, as `ACL SETUSER` does (keywords in any case); `Err` is Redis' reason.
    fn apply(&mut self, rule: &str, table: &Table) -> Result<(), &'static str> {
        const UNKNOWN: &str = "Unknown command or category name in ACL";
        const SYNTAX: &str = "Syntax error";
        const BAD_HASH: &str = "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters";
        const NO_SUCH_PASSWORD: &str =
            "The password you are trying to remove from the user does not exist";
        const AFTER_ALL_KEYS: &str = "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns";
        const AFTER_ALL_CHANNELS: &str = "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels";
        const SELECTORS: &str = "selectors ('(...)') are not supported by slotgate";
        match rule.to_ascii_lowercase().as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "skip-sanitize-payload" => self.sanitize = Some(false),
            "sanitize-payload" => self.sanitize = Some(true),
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" | "~*" => self.keys = Reach::All,
            "resetkeys" => self.keys = Reach::NONE,
            "allchannels" | "&*" => self.channels = Reach::All,
            "resetchannels" => self.channels = Reach::NONE,
            "+@all" | "allcommands" => {
                self.commands.fill(true);
                self.future = true;
            }
            "-@all" | "nocommands" => {
                self.commands.fill(false);
                self.future = false;
            }
            // There are no selectors to clear.
            "clearselectors" => {}
            "reset" => {
                let name = std::mem::take(&mut self.name);
                *self = User::new(&name, table);
                self.sanitize = Some(true);
            }
            _ => {
                if let Some(pw) = rule.strip_prefix('>') {
                    let d = sha256(pw.as_bytes());
                    if !self.passwords.iter().any(|p| same_digest(p, &d)) {
                        self.passwords.push(d);
                    }
                    self.nopass = false;
                } else if let Some(pw) = rule.strip_prefix('<') {
                    let d = sha256(pw.as_bytes());
                    let before = self.passwords.len();
                    self.passwords.retain(|p| !same_digest(p, &d));
                    if self.passwords.len() == before {
                        return Err(NO_SUCH_PASSWORD);
                    }
                } else if let Some(hex) = rule.strip_prefix('#') {
                    let d = parse_hash(hex).ok_or(BAD_HASH)?;
                    if !self.passwords.contains(&d) {
                        self.passwords.push(d);
                    }
                    self.nopass = false;
                } else if let Some(hex) = rule.strip_prefix('!') {
                    let d = parse_hash(hex).ok_or(BAD_HASH)?;
                    let before = self.passwords.len();
                    self.passwords.retain(|p| *p != d);
                    if self.passwords.len() == before {
                        return Err(NO_SUCH_PASSWORD);
                    }
                } else if rule.starts_with('(') {
                    return Err(SELECTORS);
                } else if let Some(p) = rule.strip_prefix('~') {
                    self.keys.add(p, READ_WRITE).map_err(|()| AFTER_ALL_KEYS)?;
                } else if let Some(spec) = rule.strip_prefix('%') {
                    let (access, pattern) = key_access_prefix(spec).ok_or(SYNTAX)?;
                    self.keys
                        .add(pattern, access)
                        .map_err(|()| AFTER_ALL_KEYS)?;
                } else if let Some(p) = rule.strip_prefix('&') {
                    self.channels
                        .add(p, READ_WRITE)
                        .map_err(|()| AFTER_ALL_CHANNELS)?;
                } else if let Some(c) = rule.strip_prefix("+@") {
                    let bit = cat::of(c.as_bytes()).ok_or(UNKNOWN)?;
                    self.set(&table.ids_in_category(bit), true);
                } else if let Some(c) = rule.strip_prefix("-@") {
                    let bit = cat::of(c.as_bytes()).ok_or(UNKNOWN)?;
                    self.set(&table.ids_in_category(bit), false);
                } else if let Some(c) = rule.strip_prefix('+') {
                    self.set(&table.ids_of(c).ok_or(UNKNOWN)?, true);
                } else if let Some(c) = rule.strip_prefix('-') {
                    self.set(&table.ids_of(c).ok_or(UNKNOWN)?, false);
                } else {
                    return Err(SYNTAX);
                }
            }
        }
        self.refresh();
        Ok(())
    }

    fn accepts(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let d = sha256(password);
        // Every stored digest is compared, so the time does not say which one matched.
        self.passwords
            .iter()
            .fold(false, |ok, p| same_digest(p, &d) | ok)
    }

    /// The command rules as Redis 7.0's `ACLDescribeSelectorCommandRules` writes them: `+@all`
    /// or `-@all`, then greedily the categories that fit the allowed commands best, then single
    /// commands for what is left (Redis writes those in its hash table's order; here they come
    /// by name).
    fn describe_commands(&self, entries: &[AclEntry]) -> String {
        let n = self.commands.len();
        let additive = !self.future;
        let mut rules = String::from(if additive { "-@all " } else { "+@all " });
        // What the rules so far allow, and what is still to be described.
        let mut fake = vec![!additive; n];
        let mut todo = self.commands.clone();
        let set = |bits: &mut [bool], id: u16, v: bool| {
            if let Some(b) = bits.get_mut(usize::from(id)) {
                *b = v;
            }
        };
        let set_category = |bits: &mut [bool], bit: u32, v: bool| {
            for e in entries {
                if e.categories & bit != 0 {
                    set(bits, e.id, v);
                    for s in &e.subs {
                        set(bits, s.0, v);
                    }
                }
                for s in e.subs.iter().filter(|s| s.1 & bit != 0) {
                    set(bits, s.0, v);
                }
            }
        };
        let get = |bits: &[bool], id: u16| bits.get(usize::from(id)).copied().unwrap_or(false);
        let mut applied = [false; cat::NAMES.len()];
        loop {
            let mut best = None;
            let (mut min_diff, mut max_same) = (usize::MAX, 0usize);
            for (j, (bit, _)) in cat::NAMES.iter().enumerate() {
                if applied.get(j).copied().unwrap_or(true) {
                    continue;
                }
                let (mut on, mut off) = (0usize, 0usize);
                let all = entries.iter().flat_map(|e| {
                    std::iter::once((e.id, e.categories)).chain(e.subs.iter().map(|s| (s.0, s.1)))
                });
                for (id, _) in all.filter(|(_, c)| c & bit != 0) {
                    if get(&todo, id) {
                        on += 1;
                    } else {
                        off += 1;
                    }
                }
                let (diff, same) = if additive { (off, on) } else { (on, off) };
                if same > diff && (diff < min_diff || (diff == min_diff && same > max_same)) {
                    best = Some(j);
                    min_diff = diff;
                    max_same = same;
                }
            }
            let Some(j) = best else { break };
            let Some(&(bit, name)) = cat::NAMES.get(j) else {
                break;
            };
            set_category(&mut fake, bit, additive);
            set_category(&mut todo, bit, !additive);
            rules.push_str(if additive { "+@" } else { "-@" });
            rules.push_str(name);
            rules.push(' ');
            if let Some(a) = applied.get_mut(j) {
                *a = true;
            }
        }
        for e in entries {
            let mine = get(&self.commands, e.id);
            if mine != get(&fake, e.id) {
                rules.push(if mine { '+' } else { '-' });
                rules.push_str(e.name);
                rules.push(' ');
                set(&mut fake, e.id, mine);
                for s in &e.subs {
                    set(&mut fake, s.0, mine);
                }
            }
            for &(id, _, name) in &e.subs {
                let mine = get(&self.commands, id);
                if mine != get(&fake, id) {
                    rules.push(if mine { '+' } else { '-' });
                    rules.push_str(name);
                    rules.push(' ');
                    set(&mut fake, id, mine);
                }
            }
        }
        rules.pop();
        rules
    }

    /// The flags `ACL GETUSER` and `ACL LIST` show, in Redis' order.
    fn flag_names(&self) -> Vec<&'static str> {
        let mut f = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            f.push("nopass");
        }
        match self.sanitize {
            Some(false) => f.push("skip-sanitize-payload"),
            Some(true) => f.push("sanitize-payload"),
            None => {}
        }
        f
    }

    fn password_hexes(&self) -> impl Iterator<Item = String> + '_ {
        self.passwords
            .iter()
            .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The user as `ACL LIST` shows it: `user <name> <flags> <#digests> <keys> <channels>
    /// <commands>`, as Redis 7.0's `ACLDescribeUser`.
    fn describe(&self, entries: &[AclEntry]) -> String {
        let mut out = format!("user {} ", self.name);
        for f in self.flag_names() {
            out.push_str(f);
            out.push(' ');
        }
        for h in self.password_hexes() {
            out.push('#');
            out.push_str(&h);
            out.push(' ');
        }
        self.keys.describe("~", &mut out);
        if self.channels != Reach::All {
            out.push_str("resetchannels ");
        }
        self.channels.describe("&", &mut out);
        out.push_str(&self.describe_commands(entries));
        out
    }

    /// The fields of `ACL GETUSER`, in Redis 7.0's order: flags, passwords, commands, keys,
    /// channels (selectors, always none here, are the caller's).
    fn details(&self, entries: &[AclEntry]) -> UserDetails {
        let trimmed = |r: &Reach, prefix: &str| {
            let mut s = String::new();
            r.describe(prefix, &mut s);
            s.pop();
            s
        };
        UserDetails {
            flags: self.flag_names(),
            passwords: self.password_hexes().collect(),
            commands: self.describe_commands(entries),
            keys: trimmed(&self.keys, "~"),
            channels: trimmed(&self.channels, "&"),
        }
    }

    /// Whether the user may run every command on every key and channel.
    #[inline]
    pub fn unrestricted(&self) -> bool {
        self.unrestricted
    }

    /// Whether the user may run the command numbered `id` (its keys and channels aside).
    #[inline]
    pub fn may_run(&self, id: u16) -> bool {
        self.commands.get(usize::from(id)).copied().unwrap_or(false)
    }

    /// Whether the user may use `key` as a command that does `access` to it does.
    #[inline]
    pub fn may_use_key(&self, key: &[u8], access: u8) -> bool {
        self.keys.admits(key, access)
    }

    /// Whether every key is the user's: no key needs looking at.
    #[inline]
    pub fn all_keys(&self) -> bool {
        matches!(self.keys, Reach::All)
    }

    /// Whether every channel is the user's.
    #[inline]
    pub fn all_channels(&self) -> bool {
        matches!(self.channels, Reach::All)
    }

    /// Whether the user may stay subscribed to all of `channels` and `patterns` (a reload
    /// changed its rules): Redis closes a subscriber that may no longer.
    pub fn may_subscribe<'a>(
        &self,
        mut channels: impl Iterator<Item = &'a [u8]>,
        mut patterns: impl Iterator<Item = &'a [u8]>,
    ) -> bool {
        channels.all(|c| self.channels.admits(c, READ_WRITE))
            && patterns.all(|p| self.channels.admits_pattern(p))
    }

    /// Checks a request of command `id`: may the user run it, on these keys (each with what
    /// the command does to it, [`READ`]/[`WRITE`] bits), with these channels (PSUBSCRIBE's
    /// patterns in `patterns`), in the order Redis checks them.
    pub fn check<'a>(
        &self,
        id: u16,
        mut keys: impl Iterator<Item = (&'a [u8], u8)>,
        mut channels: impl Iterator<Item = &'a [u8]>,
        mut patterns: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), Denial> {
        if !self.commands.get(usize::from(id)).copied().unwrap_or(false) {
            return Err(Denial::Command);
        }
        if !keys.all(|(k, access)| self.keys.admits(k, access)) {
            return Err(Denial::Keys);
        }
        if !channels.all(|c| self.channels.admits(c, READ_WRITE))
            || !patterns.all(|p| self.channels.admits_pattern(p))
        {
            return Err(Denial::Channels);
        }
        Ok(())
    }
}

/// Failed logins per client address, to slow down password guessing: past `limit` failures
/// from one address within a window, every AUTH from it closes the connection until the window
/// ends (Redis has no such limit; a proxy in front of many applications should).
#[derive(Debug)]
pub struct AuthThrottle {
    /// A reload may change it.
    limit: std::sync::atomic::AtomicU32,
    window: std::time::Duration,
    by_addr:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u32)>>,
}

/// Addresses remembered at most; past it, expired ones are forgotten (and, if none has
/// expired, all: the limit then fails open rather than grow without bound).
const THROTTLE_ADDRS: usize = 10_000;

impl AuthThrottle {
    /// `limit` failures per `window`; 0 never throttles.
    pub fn new(limit: u32, window: std::time::Duration) -> AuthThrottle {
        AuthThrottle {
            limit: std::sync::atomic::AtomicU32::new(limit),
            window,
            by_addr: Default::default(),
        }
    }

    fn with_entry<R>(
        &self,
        addr: std::net::IpAddr,
        now: std::time::Instant,
        f: impl FnOnce(&mut (std::time::Instant, u32)) -> R,
    ) -> R {
        let mut m = match self.by_addr.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if m.len() >= THROTTLE_ADDRS && !m.contains_key(&addr) {
            let window = self.window;
            m.retain(|_, (start, _)| now.duration_since(*start) < window);
            if m.len() >= THROTTLE_ADDRS {
                m.clear();
            }
        }
        let e = m.entry(addr).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        f(e)
    }

    /// A reload's new limit.
    pub fn set_limit(&self, limit: u32) {
        self.limit
            .store(limit, std::sync::atomic::Ordering::Relaxed);
    }

    fn limit(&self) -> u32 {
        self.limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether an AUTH from `addr` may be checked at all now.
    pub fn admits(&self, addr: std::net::IpAddr, now: std::time::Instant) -> bool {
        let limit = self.limit();
        limit == 0 || self.with_entry(addr, now, |e| e.1 < limit)
    }

    /// Counts a failed AUTH from `addr`.
    pub fn failed(&self, addr: std::net::IpAddr, now: std::time::Instant) {
        if self.limit() > 0 {
            self.with_entry(addr, now, |e| e.1 = e.1.saturating_add(1));
        }
    }
}

/// The users clients log in as; the first is `default`.
#[derive(Debug, Clone)]
pub struct Access {
    /// Shared, so that a session holds its user without looking it up per request.
    users: Vec<std::sync::Arc<User>>,
    /// Every command as the rules saw them (the whole Redis table, denied commands included, as
    /// Redis' ACL uses its original table whatever `rename-command` did), to describe users.
    entries: std::sync::Arc<Vec<AclEntry>>,
}

/// The user index of `default`.
pub const DEFAULT_USER: u16 = 0;

impl Default for Access {
    fn default() -> Self {
        Access::new(None)
    }
}

impl Access {
    /// Only the `default` user, with `requirepass` as its password if given.
    pub fn new(requirepass: Option<&Secret>) -> Access {
        Self::with_users(requirepass, &[], &Table::redis70()).unwrap_or_else(|_| Access {
            users: Vec::new(),
            entries: Default::default(),
        })
    }

    /// The `default` user (with `requirepass`) and the configured users, their rules applied
    /// in order after `reset`, as Redis loads users. A `default` entry replaces the built-in
    /// one. `Err` names the user and the rule, with Redis' reason.
    pub fn with_users(
        requirepass: Option<&Secret>,
        users: &[UserRules],
        table: &Table,
    ) -> Result<Access, String> {
        let mut default = User::default_user(table);
        if let Some(p) = requirepass {
            default.nopass = false;
            default.passwords = vec![sha256(p.expose().as_bytes())];
        }
        let mut all = vec![default];
        for u in users {
            if u.name.is_empty() || u.name.contains(char::is_whitespace) {
                return Err(format!("'{}' is not a user name", u.name));
            }
            let mut user = User::new(&u.name, table);
            // Redis resets a configured `default` user before its rules (other users are new).
            if u.name == "default" {
                let _ = user.apply("reset", table);
            }
            for rule in u.rules.split_whitespace() {
                user.apply(rule, table).map_err(|reason| {
                    format!(
                        "user {}: Error in ACL SETUSER modifier '{rule}': {reason}",
                        u.name
                    )
                })?;
            }
            if u.name == "default" {
                if requirepass.is_some() {
                    return Err(
                        "the default user's password goes in its rules or in requirepass, not both"
                            .into(),
                    );
                }
                if let Some(d) = all.first_mut() {
                    *d = user;
                }
            } else if all.iter().any(|x| x.name == u.name) {
                return Err(format!("user {} is defined twice", u.name));
            } else {
                all.push(user);
            }
        }
        Ok(Access {
            users: all.into_iter().map(std::sync::Arc::new).collect(),
            entries: std::sync::Arc::new(table.acl_entries()),
        })
    }

    /// The user numbered `index` (a session's [`DEFAULT_USER`] or what AUTH gave it).
    pub fn user(&self, index: u16) -> Option<&User> {
        self.users.get(usize::from(index)).map(|u| &**u)
    }

    /// The same user, to hold (a session keeps the one it is logged in as).
    pub fn user_shared(&self, index: u16) -> Option<std::sync::Arc<User>> {
        self.users.get(usize::from(index)).cloned()
    }

    /// The user a client certificate's common name logs in, without a password (the
    /// certificate is the credential): one with that name that is on.
    pub fn certificate_user(&self, name: &[u8]) -> Option<u16> {
        let i = self
            .users
            .iter()
            .position(|u| u.enabled && u.name.as_bytes() == name)?;
        u16::try_from(i).ok()
    }

    /// The number of the user named `name`, on or off.
    pub fn index_of(&self, name: &[u8]) -> Option<u16> {
        let i = self.users.iter().position(|u| u.name.as_bytes() == name)?;
        u16::try_from(i).ok()
    }

    /// The user named `name`.
    pub fn named(&self, name: &[u8]) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.name.as_bytes() == name)
            .map(|u| &**u)
    }

    /// `user`'s `ACL LIST` line.
    pub fn describe(&self, user: &User) -> String {
        user.describe(&self.entries)
    }

    /// What `ACL GETUSER` shows of `user`.
    pub fn details(&self, user: &User) -> UserDetails {
        user.details(&self.entries)
    }

    /// Every user, by name (as `ACL USERS` and `ACL LIST` order them).
    pub fn by_name(&self) -> Vec<&User> {
        let mut users: Vec<&User> = self.users.iter().map(|u| &**u).collect();
        users.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        users
    }

    /// Whether a new connection starts logged in as `default` (on, and without a password).
    pub fn open_by_default(&self) -> bool {
        self.users.first().is_some_and(|d| d.enabled && d.nopass)
    }

    /// `AUTH <password>`: the `default` user's password.
    pub fn auth_default(&self, password: &[u8]) -> Result<u16, Refusal> {
        match self.users.first() {
            Some(d) if d.nopass && d.enabled => Err(Refusal::NoPasswordSet),
            Some(d) if d.accepts(password) => Ok(DEFAULT_USER),
            _ => Err(Refusal::WrongPass),
        }
    }

    /// `AUTH <user> <password>` and `HELLO ... AUTH <user> <password>`.
    pub fn auth(&self, user: &[u8], password: &[u8]) -> Result<u16, Refusal> {
        self.users
            .iter()
            .position(|u| u.name.as_bytes() == user)
            .filter(|&i| self.users.get(i).is_some_and(|u| u.accepts(password)))
            .and_then(|i| u16::try_from(i).ok())
            .ok_or(Refusal::WrongPass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(users: &[(&str, &str)]) -> Result<Access, String> {
        let rules: Vec<UserRules> = users
            .iter()
            .map(|(n, r)| UserRules {
                name: n.to_string(),
                rules: r.to_string(),
            })
            .collect();
        Access::with_users(None, &rules, &Table::redis70())
    }

    fn id(name: &str) -> u16 {
        Table::redis70().ids_of(name).unwrap()[0]
    }

    /// `check` with keys and channels given as strings.
    fn check(u: &User, cmd: &str, keys: &[&str], channels: &[&str]) -> Result<(), Denial> {
        u.check(
            id(cmd),
            keys.iter().map(|k| (k.as_bytes(), READ_WRITE)),
            channels.iter().map(|c| c.as_bytes()),
            std::iter::empty(),
        )
    }

    /// `check` of a whole request, its keys' access read from the command table.
    fn run(u: &User, args: &[&str]) -> Result<(), Denial> {
        let table = Table::redis70();
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let req = crate::protocol::Request::from_args(&argv);
        let mut entry = table.get(argv[0]).unwrap();
        if entry.has_subcommands() {
            entry = entry.subcommand(argv[1]).unwrap();
        }
        let mut keys = smallvec::SmallVec::new();
        crate::command::key_access(entry, &req, &mut keys);
        let keys: Vec<(&[u8], u8)> = keys
            .iter()
            .map(|&(i, a)| (req.arg(i as usize).unwrap(), a))
            .collect();
        u.check(
            entry.id,
            keys.into_iter(),
            std::iter::empty(),
            std::iter::empty(),
        )
    }

    fn listed(rules: &str) -> String {
        let a = access(&[("u", rules)]).unwrap();
        a.describe(a.user(1).unwrap())
    }

    #[test]
    fn without_a_password_everyone_is_the_default_user() {
        let a = Access::new(None);
        assert!(a.open_by_default());
        assert_eq!(a.auth_default(b"x"), Err(Refusal::NoPasswordSet));
        assert_eq!(a.auth(b"default", b"anything"), Ok(DEFAULT_USER));
        assert_eq!(a.auth(b"app", b"x"), Err(Refusal::WrongPass));
        assert!(a.user(DEFAULT_USER).unwrap().unrestricted());
    }

    #[test]
    fn with_requirepass_only_the_password_logs_in() {
        let a = Access::new(Some(&Secret::new("s3cret")));
        assert!(!a.open_by_default());
        assert_eq!(a.auth_default(b"s3cret"), Ok(DEFAULT_USER));
        assert_eq!(a.auth_default(b"s3cre"), Err(Refusal::WrongPass));
        assert_eq!(a.auth(b"default", b"s3cret"), Ok(DEFAULT_USER));
        assert_eq!(a.auth(b"default", b""), Err(Refusal::WrongPass));
        assert_eq!(a.auth(b"app", b"s3cret"), Err(Refusal::WrongPass));
    }

    #[test]
    fn rules_apply_in_order_from_nothing() {
        let a = access(&[("app", "on >pw ~* &* +@read +@connection -get")]).unwrap();
        let app = a.user(a.auth(b"app", b"pw").unwrap()).unwrap();
        assert_eq!(check(app, "mget", &["k"], &[]), Ok(()));
        assert_eq!(check(app, "get", &["k"], &[]), Err(Denial::Command));
        assert_eq!(check(app, "set", &["k"], &[]), Err(Denial::Command));
        assert_eq!(check(app, "config|get", &[], &[]), Err(Denial::Command));
        assert_eq!(check(app, "ping", &[], &[]), Ok(()));
        assert!(!app.unrestricted());
    }

    #[test]
    fn a_container_rule_covers_its_subcommands_and_a_subcommand_rule_only_itself() {
        let a = access(&[(
            "ops",
            "on nopass allkeys +config|get -@all +client +config|get",
        )])
        .unwrap();
        let ops = a.user(1).unwrap();
        assert_eq!(check(ops, "config|get", &[], &[]), Ok(()));
        assert_eq!(check(ops, "config|set", &[], &[]), Err(Denial::Command));
        assert_eq!(check(ops, "client|list", &[], &[]), Ok(()));
    }

    #[test]
    fn keys_and_channels_are_all_or_none_and_selectors_are_refused() {
        let a = access(&[("nokeys", "on nopass +@all resetkeys resetchannels")]).unwrap();
        let u = a.user(1).unwrap();
        assert_eq!(check(u, "get", &["k"], &[]), Err(Denial::Keys));
        assert_eq!(check(u, "ping", &[], &[]), Ok(()));
        assert_eq!(check(u, "publish", &[], &["ch"]), Err(Denial::Channels));
        let e = access(&[("p", "on (~app:* +get)")]).unwrap_err();
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn read_and_write_patterns_follow_what_the_command_does_to_each_key() {
        let a = access(&[("rw", "on nopass +@all %R~r:* %W~w:* ~rw:*")]).unwrap();
        let u = a.user(1).unwrap();
        assert_eq!(run(u, &["get", "r:1"]), Ok(()));
        assert_eq!(run(u, &["get", "w:1"]), Err(Denial::Keys));
        assert_eq!(run(u, &["get", "rw:1"]), Ok(()));
        // A plain SET only writes; SET ... GET reads as well (variable flags).
        assert_eq!(run(u, &["set", "w:1", "v"]), Ok(()));
        assert_eq!(run(u, &["set", "r:1", "v"]), Err(Denial::Keys));
        assert_eq!(run(u, &["set", "w:1", "v", "GET"]), Err(Denial::Keys));
        assert_eq!(run(u, &["set", "rw:1", "v", "get"]), Ok(()));
        // COPY reads its source and writes its destination; LMOVE's source is both.
        assert_eq!(run(u, &["copy", "r:1", "w:1"]), Ok(()));
        assert_eq!(run(u, &["copy", "w:1", "r:1"]), Err(Denial::Keys));
        assert_eq!(
            run(u, &["lmove", "r:1", "w:1", "LEFT", "LEFT"]),
            Err(Denial::Keys)
        );
        // BITFIELD with GET and OVERFLOW only reads; SET or a syntax error counts as a write.
        assert_eq!(run(u, &["bitfield", "r:1", "GET", "u8", "0"]), Ok(()));
        assert_eq!(
            run(u, &["bitfield", "r:1", "OVERFLOW", "SAT", "GET", "u8", "0"]),
            Ok(())
        );
        assert_eq!(
            run(u, &["bitfield", "r:1", "SET", "u8", "0", "1"]),
            Err(Denial::Keys)
        );
        assert_eq!(run(u, &["bitfield", "r:1", "GET", "u8"]), Err(Denial::Keys));
        // EXISTS neither reads nor writes a value: any pattern admits it.
        assert_eq!(run(u, &["exists", "w:1"]), Ok(()));
        assert_eq!(run(u, &["exists", "other"]), Err(Denial::Keys));
        // SPUBLISH's channel routes like a key but is not checked as one.
        assert_eq!(run(u, &["spublish", "other", "m"]), Ok(()));
    }

    #[test]
    fn pattern_rules_are_read_as_redis_reads_them() {
        assert!(listed("%RW~a").contains(" ~a "));
        assert!(listed("%R~a %W~a").contains(" ~a "));
        assert!(listed("%w~a").contains(" %W~a "));
        assert!(listed("%R").contains(" %R~ "));
        let err = |rules: &str| access(&[("u", rules)]).unwrap_err();
        assert!(err("%X~a").ends_with("Syntax error"));
        assert!(err("%RR~a").ends_with("Syntax error"));
        assert!(err("~* ~x").contains("Try 'resetkeys'"), "{}", err("~* ~x"));
        assert!(err("allchannels &x").contains("Try 'resetchannels'"));
        assert!(err(">a <b").ends_with("does not exist"));
        // After resetkeys a pattern is fine again.
        assert!(listed("~* resetkeys ~x").contains(" ~x "));
    }

    #[test]
    fn acl_list_lines_are_redis_70s() {
        // Each expected line was read from redis-server 7.0.15 given the same rules.
        let pw = "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4";
        assert_eq!(
            listed("on >pw %R~r:* %W~w:* ~rw:* &ch:* +@read +set -get"),
            format!(
                "user u on #{pw} %R~r:* %W~w:* ~rw:* resetchannels &ch:* -@all +@read -get +set"
            )
        );
        assert_eq!(
            listed(&format!("+@all -@dangerous #{pw} resetchannels")),
            format!("user u off #{pw} resetchannels +@all -@dangerous")
        );
        assert_eq!(
            listed("+@READ +@read -GET +config|get -config"),
            "user u off resetchannels -@all +@read -get"
        );
        assert_eq!(
            listed("+@read +@read -get +get +GET +config|get -@write +@all -set"),
            "user u off resetchannels +@all -set"
        );
        assert_eq!(
            listed("reset"),
            "user u off sanitize-payload resetchannels -@all"
        );
        assert_eq!(listed("&*"), "user u off &* -@all");
        assert_eq!(
            listed("+get +@read -@read"),
            "user u off resetchannels -@all"
        );
        let a = Access::new(None);
        assert_eq!(
            a.describe(a.user(0).unwrap()),
            "user default on nopass ~* &* +@all"
        );
        let configured = access(&[("default", "on nopass ~* &* +@all")]).unwrap();
        assert_eq!(
            configured.describe(configured.user(0).unwrap()),
            "user default on nopass sanitize-payload ~* &* +@all"
        );
    }

    #[test]
    fn disabled_users_and_wrong_passwords_are_refused_alike() {
        let hash = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";
        let a = access(&[
            ("off1", &format!("off #{hash} +@all")),
            ("on1", "on >a >b +@all"),
        ])
        .unwrap();
        assert_eq!(a.auth(b"off1", b"x"), Err(Refusal::WrongPass));
        assert_eq!(a.auth(b"on1", b"b"), Ok(2));
        assert_eq!(a.auth(b"on1", b"c"), Err(Refusal::WrongPass));
    }

    #[test]
    fn bad_rules_give_redis_reasons() {
        let e = access(&[("u", "foo")]).unwrap_err();
        assert_eq!(
            e,
            "user u: Error in ACL SETUSER modifier 'foo': Syntax error"
        );
        let e = access(&[("u", "+nosuch")]).unwrap_err();
        assert!(
            e.ends_with("Unknown command or category name in ACL"),
            "{e}"
        );
        let e = access(&[("u", "+@nosuch")]).unwrap_err();
        assert!(
            e.ends_with("Unknown command or category name in ACL"),
            "{e}"
        );
        assert!(
            access(&[("u", "#abc")])
                .unwrap_err()
                .contains("64 characters")
        );
        assert!(access(&[("u", "on"), ("u", "off")]).is_err());
    }

    #[test]
    fn key_and_channel_patterns_admit_only_what_they_match() {
        let a = access(&[("p", "on nopass +@all ~app:* ~cache:?? &news.*")]).unwrap();
        let u = a.user(1).unwrap();
        assert_eq!(check(u, "get", &["app:1"], &[]), Ok(()));
        assert_eq!(check(u, "mget", &["app:1", "cache:ab"], &[]), Ok(()));
        assert_eq!(
            check(u, "mget", &["app:1", "cache:abc"], &[]),
            Err(Denial::Keys)
        );
        assert_eq!(check(u, "get", &["other"], &[]), Err(Denial::Keys));
        assert_eq!(check(u, "publish", &[], &["news.eu"]), Ok(()));
        assert_eq!(check(u, "publish", &[], &["sports"]), Err(Denial::Channels));
        // PSUBSCRIBE wants the very pattern.
        let psub = |p: &str| {
            u.check(
                id("psubscribe"),
                std::iter::empty(),
                std::iter::empty(),
                std::iter::once(p.as_bytes()),
            )
        };
        assert_eq!(psub("news.*"), Ok(()));
        assert_eq!(psub("news.eu"), Err(Denial::Channels));
    }

    #[test]
    fn an_address_past_its_failures_is_throttled_until_the_window_ends() {
        use std::time::{Duration, Instant};
        let t = AuthThrottle::new(2, Duration::from_secs(60));
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        assert!(t.admits(a, now));
        t.failed(a, now);
        t.failed(a, now);
        assert!(!t.admits(a, now));
        assert!(t.admits(b, now), "other addresses are not affected");
        assert!(t.admits(a, now + Duration::from_secs(61)), "a new window");
        let off = AuthThrottle::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            off.failed(a, now);
        }
        assert!(off.admits(a, now));
    }

    #[test]
    fn pattern_shapes_match_as_the_glob_does() {
        for (p, names) in [
            (
                "app:*",
                &[
                    "app:",
                    "app:1",
                    "ap",
                    "xapp:1",
                    "app:12345678",
                    "apX:12345678",
                ][..],
            ),
            // Eight bytes before the star: the whole word; nine: the long form.
            (
                "12345678*",
                &["12345678", "123456789", "1234567", "12345679x"][..],
            ),
            (
                "123456789*",
                &["123456789", "1234567890", "12345678", "123456788x"][..],
            ),
            ("*", &["", "a", "abcdefghij"][..]),
            ("exact", &["exact", "exact1", ""][..]),
            ("a?c*", &["abc", "abcd", "ac"][..]),
        ] {
            let compiled = Pattern::new(p.as_bytes());
            assert_eq!(compiled.source(), p.as_bytes());
            for n in names {
                assert_eq!(
                    compiled.matches(n.as_bytes()),
                    glob_match(p.as_bytes(), n.as_bytes()),
                    "{p} ~ {n}"
                );
            }
        }
    }

    #[test]
    fn globs_match_as_keys_and_scan_patterns_do() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m("*", "") && m("*", "abc") && m("a*", "a") && m("a*c", "abbbc"));
        assert!(!m("a*c", "abcd") && !m("a?c", "ac") && m("a?c", "abc"));
        assert!(m("h[ae]llo", "hello") && m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo") && m("h[b-a]llo", "hallo"));
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb") && m("[\\]]", "]"));
        assert!(m("celery*", "celery\x06\x163") && !m("celery*", "{celery}celery"));
        assert!(m("*:[0-9]*", "job:7:x") && !m("*:[0-9]", "job:x"));
        // An unclosed class ends with the pattern, as in Redis.
        assert!(!m("a[", "a[") && !m("a[", "ab") && m("a[b", "ab"));
        assert!(m("**a", "ba") && m("a**", "a") && !m("", "a") && m("", ""));
    }

    #[test]
    fn globs_match_as_redis_stringmatchlen() {
        for (p, s, want) in [
            ("*", "", true),
            ("a*", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abcd", false),
            ("?", "", false),
            ("h?llo", "hello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*a*b*", "xxaxxbxx", true),
            ("**", "x", true),
        ] {
            assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), want, "{p} ~ {s}");
        }
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let a = access(&[("app", "on >hunter2 +@all")]).unwrap();
        let printed = format!("{a:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
