//! Who may use slotgate and what each user may run: the `default` user (with `requirepass`, or
//! rules of its own) and proxy users configured with Redis' own ACL rule syntax (`on >secret
//! +@read -get ~* &*`), and the answers Redis 7.0 gives to `AUTH`, `HELLO ... AUTH` and to a
//! command a user may not run.
//!
//! Decisions are pure functions of the configuration, the command table and what a client
//! sent. A password is kept as its SHA-256 digest, compared in constant time, and must never
//! reach a log line, an error or a `Debug` print. Key and channel patterns use Redis' glob; key
//! patterns by access (`%R~`, `%W~`) are refused when the rules are read, never half applied.

use ring::digest::{SHA256, digest};

use crate::backend::Secret;
use crate::command::Table;
use crate::command::table::cat;

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
/// (none when it has no pattern).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    All,
    Patterns(Vec<Pattern>),
}

/// A glob pattern as written, with the usual shapes recognised once, when the rules are read:
/// a prefix (`app:*`, matched by its text before the star) or a literal costs one comparison per
/// key instead of a glob walk.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Prefix(Vec<u8>),
    Exact(Vec<u8>),
    Glob(Vec<u8>),
}

impl Pattern {
    fn new(p: &[u8]) -> Pattern {
        let special = |b: &u8| matches!(b, b'*' | b'?' | b'[' | b'\\');
        match p.split_last() {
            Some((b'*', head)) if !head.iter().any(special) => Pattern::Prefix(p.to_vec()),
            _ if !p.iter().any(special) => Pattern::Exact(p.to_vec()),
            _ => Pattern::Glob(p.to_vec()),
        }
    }

    fn source(&self) -> &[u8] {
        match self {
            Pattern::Prefix(p) | Pattern::Exact(p) | Pattern::Glob(p) => p,
        }
    }

    #[inline]
    fn matches(&self, name: &[u8]) -> bool {
        match self {
            Pattern::Prefix(p) => name.starts_with(p.split_last().map_or(&[][..], |(_, h)| h)),
            Pattern::Exact(p) => name == p.as_slice(),
            Pattern::Glob(p) => glob_match(p, name),
        }
    }
}

impl Reach {
    const NONE: Reach = Reach::Patterns(Vec::new());

    fn add(&mut self, pattern: &str) {
        if pattern == "*" {
            *self = Reach::All;
        } else if let Reach::Patterns(p) = self {
            let new = Pattern::new(pattern.as_bytes());
            if !p.contains(&new) {
                p.push(new);
            }
        }
    }

    /// Whether `name` matches: a key or a channel against the patterns.
    fn admits(&self, name: &[u8]) -> bool {
        match self {
            Reach::All => true,
            Reach::Patterns(p) => p.iter().any(|pat| pat.matches(name)),
        }
    }

    /// Whether a PSUBSCRIBE pattern is allowed: Redis wants it equal to one of the user's.
    fn admits_pattern(&self, pattern: &[u8]) -> bool {
        match self {
            Reach::All => true,
            Reach::Patterns(p) => p.iter().any(|x| x.source() == pattern),
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
    passwords: Vec<[u8; 32]>,
    /// Allowed commands, by [`crate::command::Entry::id`].
    commands: Vec<bool>,
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
            passwords: Vec::new(),
            commands: vec![false; table.entry_count()],
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

    /// Applies one rule, as `ACL SETUSER` does; `Err` is Redis' reason.
    fn apply(&mut self, rule: &str, table: &Table) -> Result<(), &'static str> {
        const UNKNOWN: &str = "Unknown command or category name in ACL";
        const PATTERNS: &str =
            "key patterns by access (%R~, %W~, %RW~) are not supported by slotgate yet";
        match rule {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => self.keys = Reach::All,
            "resetkeys" => self.keys = Reach::NONE,
            "allchannels" => self.channels = Reach::All,
            "resetchannels" => self.channels = Reach::NONE,
            "+@all" | "allcommands" => self.commands.fill(true),
            "-@all" | "nocommands" => self.commands.fill(false),
            "reset" => {
                let name = std::mem::take(&mut self.name);
                *self = User::new(&name, table);
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
                    self.passwords.retain(|p| !same_digest(p, &d));
                } else if let Some(hex) = rule.strip_prefix('#') {
                    let d = parse_hash(hex).ok_or(
                        "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters",
                    )?;
                    if !self.passwords.contains(&d) {
                        self.passwords.push(d);
                    }
                    self.nopass = false;
                } else if let Some(hex) = rule.strip_prefix('!') {
                    let d = parse_hash(hex).ok_or(
                        "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters",
                    )?;
                    self.passwords.retain(|p| *p != d);
                } else if let Some(p) = rule.strip_prefix('~') {
                    self.keys.add(p);
                } else if let Some(p) = rule.strip_prefix('&') {
                    self.channels.add(p);
                } else if rule.starts_with('%') {
                    return Err(PATTERNS);
                } else if let Some(c) = rule.strip_prefix("+@") {
                    self.set(
                        &table.ids_in_category(cat::of(c.as_bytes()).ok_or(UNKNOWN)?),
                        true,
                    );
                } else if let Some(c) = rule.strip_prefix("-@") {
                    self.set(
                        &table.ids_in_category(cat::of(c.as_bytes()).ok_or(UNKNOWN)?),
                        false,
                    );
                } else if let Some(c) = rule.strip_prefix('+') {
                    self.set(&table.ids_of(c).ok_or(UNKNOWN)?, true);
                } else if let Some(c) = rule.strip_prefix('-') {
                    self.set(&table.ids_of(c).ok_or(UNKNOWN)?, false);
                } else {
                    return Err("Syntax error");
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

    /// Whether the user may run every command on every key and channel.
    #[inline]
    pub fn unrestricted(&self) -> bool {
        self.unrestricted
    }

    /// Checks a request of command `id`: may the user run it, on these keys, with these
    /// channels (PSUBSCRIBE's patterns in `patterns`), in the order Redis checks them.
    pub fn check<'a>(
        &self,
        id: u16,
        mut keys: impl Iterator<Item = &'a [u8]>,
        mut channels: impl Iterator<Item = &'a [u8]>,
        mut patterns: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), Denial> {
        if !self.commands.get(usize::from(id)).copied().unwrap_or(false) {
            return Err(Denial::Command);
        }
        if !keys.all(|k| self.keys.admits(k)) {
            return Err(Denial::Keys);
        }
        if !channels.all(|c| self.channels.admits(c))
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
    limit: u32,
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
            limit,
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

    /// Whether an AUTH from `addr` may be checked at all now.
    pub fn admits(&self, addr: std::net::IpAddr, now: std::time::Instant) -> bool {
        self.limit == 0 || self.with_entry(addr, now, |e| e.1 < self.limit)
    }

    /// Counts a failed AUTH from `addr`.
    pub fn failed(&self, addr: std::net::IpAddr, now: std::time::Instant) {
        if self.limit > 0 {
            self.with_entry(addr, now, |e| e.1 = e.1.saturating_add(1));
        }
    }
}

/// The users clients log in as; the first is `default`.
#[derive(Debug, Clone)]
pub struct Access {
    users: Vec<User>,
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
        Self::with_users(requirepass, &[], &Table::redis70())
            .unwrap_or_else(|_| Access { users: Vec::new() })
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
        Ok(Access { users: all })
    }

    /// The user numbered `index` (a session's [`DEFAULT_USER`] or what AUTH gave it).
    pub fn user(&self, index: u16) -> Option<&User> {
        self.users.get(usize::from(index))
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
            keys.iter().map(|k| k.as_bytes()),
            channels.iter().map(|c| c.as_bytes()),
            std::iter::empty(),
        )
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
    fn keys_and_channels_are_all_or_none_and_patterns_are_refused() {
        let a = access(&[("nokeys", "on nopass +@all resetkeys resetchannels")]).unwrap();
        let u = a.user(1).unwrap();
        assert_eq!(check(u, "get", &["k"], &[]), Err(Denial::Keys));
        assert_eq!(check(u, "ping", &[], &[]), Ok(()));
        assert_eq!(check(u, "publish", &[], &["ch"]), Err(Denial::Channels));
        let e = access(&[("p", "on %R~app:*")]).unwrap_err();
        assert!(
            e.contains("'%R~app:*'") && e.contains("not supported"),
            "{e}"
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
            ("app:*", &["app:", "app:1", "ap", "xapp:1"][..]),
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
