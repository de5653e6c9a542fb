//! Typed values of the configuration, parsed from text: booleans, counts, durations, the bind
//! address, unit names. Pure.

use std::fmt;
use std::net::IpAddr;

/// `1/true/yes/on` or `0/false/no/off` (any case), as the original reads its booleans; empty
/// is false.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Why a whole number was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountError {
    NotANumber,
    TooLarge,
    BelowMinimum(u64),
}

/// A whole number of at least `min`.
pub fn parse_count(s: &str, min: u64) -> Result<u64, CountError> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CountError::NotANumber);
    }
    let n: u64 = t.parse().map_err(|_| CountError::TooLarge)?;
    if n < min {
        return Err(CountError::BelowMinimum(min));
    }
    Ok(n)
}

/// A positive number of seconds, fractions allowed.
pub fn parse_positive_seconds(s: &str) -> Option<f64> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)
}

/// Normalizes a unit name as `systemctl` does (a bare name means `.service`) and validates it.
pub fn unit_name(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty()
        || s.len() > 255
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.@\\".contains(c))
    {
        return None;
    }
    Some(if s.contains('.') {
        s.to_string()
    } else {
        format!("{s}.service")
    })
}

/// The one TCP `host:port` Gunicorn binds (`GUNICORN_BIND`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindAddr {
    pub host: String,
    /// `None` for a host name (it matches any address on the port).
    pub ip: Option<IpAddr>,
    pub port: u16,
}

impl std::str::FromStr for BindAddr {
    type Err = String;

    /// Parses `host:port`, `[v6]:port`.
    fn from_str(s: &str) -> Result<BindAddr, String> {
        let s = s.trim();
        if s.starts_with("unix:") || s.starts_with("fd://") {
            return Err(
                "a unix socket or fd bind has no port; the contract is one TCP port".into(),
            );
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            rest.split_once("]:")
                .ok_or("an IPv6 bind is written [address]:port")?
        } else {
            s.rsplit_once(':').ok_or("no `:port`")?
        };
        if host.is_empty() {
            return Err("no host before `:`".into());
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{port}` is not a port number 1-65535"))?;
        let ip = host.parse::<IpAddr>().ok();
        if ip.is_none()
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(format!("`{host}` is neither an IP address nor a host name"));
        }
        Ok(BindAddr {
            host: host.to_string(),
            ip,
            port,
        })
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            Some(IpAddr::V6(_)) => write!(f, "[{}]:{}", self.host, self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl serde::Serialize for BindAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl BindAddr {
    /// Whether a socket listening on `ip:port` takes connections meant for this bind.
    pub fn covers(&self, ip: IpAddr, port: u16) -> bool {
        if self.port != port {
            return false;
        }
        match self.ip {
            None => true,
            Some(mine) => {
                mine.is_unspecified()
                    || ip.is_unspecified()
                    || mine == ip
                    || mapped(mine) == mapped(ip)
            }
        }
    }

    /// Where a client on this machine reaches the bind: a wildcard bind by loopback.
    pub fn local_host(&self) -> String {
        match self.ip {
            Some(ip) if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".into(),
            Some(ip) if ip.is_unspecified() => "::1".into(),
            _ => self.host.clone(),
        }
    }
}

fn mapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn binds() {
        let b: BindAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!((b.port, b.to_string().as_str()), (8080, "0.0.0.0:8080"));
        let b6: BindAddr = "[::1]:9".parse().unwrap();
        assert_eq!(b6.ip, Some("::1".parse().unwrap()));
        assert_eq!(b6.to_string(), "[::1]:9");
        assert!("localhost:80".parse::<BindAddr>().unwrap().ip.is_none());
        for bad in [
            "8080",
            "0.0.0.0:",
            ":80",
            "h:0",
            "h:70000",
            "unix:/run/g.sock",
            "a b:1",
        ] {
            assert!(bad.parse::<BindAddr>().is_err(), "{bad}");
        }
        assert!(b.covers("127.0.0.1".parse().unwrap(), 8080));
        assert!(!b.covers("127.0.0.1".parse().unwrap(), 8081));
        let lo: BindAddr = "127.0.0.1:80".parse().unwrap();
        assert!(lo.covers("::ffff:127.0.0.1".parse().unwrap(), 80));
        assert!(!lo.covers("10.0.0.1".parse().unwrap(), 80));
        assert_eq!(b.local_host(), "127.0.0.1");
        assert_eq!("[::]:1".parse::<BindAddr>().unwrap().local_host(), "::1");
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count(" 42 ", 1), Ok(42));
        assert_eq!(parse_count("0", 1), Err(CountError::BelowMinimum(1)));
        assert_eq!(parse_count("-1", 1), Err(CountError::NotANumber));
        assert_eq!(parse_count("1.5", 1), Err(CountError::NotANumber));
        assert_eq!(
            parse_count("99999999999999999999999", 1),
            Err(CountError::TooLarge)
        );
        assert_eq!(parse_bool("On"), Some(true));
        assert_eq!(parse_bool(""), Some(false));
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(unit_name("app").as_deref(), Some("app.service"));
        assert_eq!(unit_name("a/b"), None);
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused(s in "\\PC{0,40}") {
            if let Ok(b) = s.parse::<BindAddr>() {
                prop_assert_eq!(b.to_string().parse::<BindAddr>(), Ok(b));
            }
            let _ = parse_count(&s, 1);
            let _ = parse_positive_seconds(&s);
            let _ = unit_name(&s);
        }
    }
}

/// How often the agent probes the app, or `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProbeInterval {
    Off,
    Every(f64),
}

impl std::str::FromStr for ProbeInterval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(ProbeInterval::Off);
        }
        parse_positive_seconds(s)
            .map(ProbeInterval::Every)
            .ok_or_else(|| "is neither a number of seconds > 0 nor `off`".to_string())
    }
}

impl std::fmt::Display for ProbeInterval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeInterval::Off => f.write_str("off"),
            ProbeInterval::Every(s) => write!(f, "{s}"),
        }
    }
}

/// Whether the agent acts on its probes (`WARDEN_AUTO_RECOVERY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AutoRecovery {
    /// Probes observe; nothing is asked.
    Off,
    /// What would be asked is ruled on by the policy and recorded; nothing is signalled.
    DryRun,
    /// Automatic restarts are asked for, under the policy.
    On,
}

impl AutoRecovery {
    pub fn as_str(self) -> &'static str {
        match self {
            AutoRecovery::Off => "off",
            AutoRecovery::DryRun => "dry-run",
            AutoRecovery::On => "on",
        }
    }
}

impl std::str::FromStr for AutoRecovery {
    type Err = String;
    /// `off`, `dry-run`, `on`; a plain yes (`1/true/yes`) enables it as a dry run first.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "0" | "false" | "no" => Ok(AutoRecovery::Off),
            "dry-run" | "1" | "true" | "yes" => Ok(AutoRecovery::DryRun),
            "on" => Ok(AutoRecovery::On),
            _ => Err("is not one of off, dry-run, on".into()),
        }
    }
}

impl std::fmt::Display for AutoRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ratio such as a pool's saturation: a finite number ≥ 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio(pub f64);

impl std::str::FromStr for Ratio {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(Ratio)
            .ok_or_else(|| "is not a number ≥ 0".to_string())
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A dotted path of object keys in a JSON document (`database_pool.state.saturation`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct JsonPath(pub String);

impl std::str::FromStr for JsonPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.split('.').any(|k| k.is_empty()) || s.chars().any(char::is_control) {
            return Err(
                "is not a dotted path of keys (e.g. database_pool.state.saturation)".into(),
            );
        }
        Ok(JsonPath(s.to_string()))
    }
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `http://` or `https://` URLs, comma-separated (etcd's members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrls(pub Vec<crate::platform::http::Endpoint>);

impl std::str::FromStr for HttpUrls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let urls = s
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| u.parse().map_err(|e| format!("{u:?}: {e}")))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(HttpUrls(urls))
    }
}

impl std::fmt::Display for HttpUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&urls.join(","))
    }
}

/// What a restart does while no etcd member answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unreachable {
    /// Keeps trying etcd within the slot wait, then fails.
    Wait,
    /// Goes on without a slot; the history says so.
    Proceed,
    /// Fails at once.
    Refuse,
}

impl Unreachable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unreachable::Wait => "wait",
            Unreachable::Proceed => "proceed",
            Unreachable::Refuse => "refuse",
        }
    }
}

/// [`Unreachable`] per who asked (`WARDEN_FLEET_UNREACHABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UnreachableRules {
    pub auto: Unreachable,
    pub manual: Unreachable,
    pub reload: Unreachable,
    /// An operator's acknowledged override of the policy.
    #[serde(rename = "override")]
    pub acknowledged_override: Unreachable,
    pub kill_switch: Unreachable,
}

impl UnreachableRules {
    /// Automatic restarts and plain requests wait; an operator who acknowledged an override,
    /// or flipped the kill-switch, has said to go on.
    pub const DEFAULT: &'static str =
        "auto=wait,manual=wait,reload=wait,override=proceed,kill_switch=proceed";
}

impl std::str::FromStr for UnreachableRules {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut r = UnreachableRules {
            auto: Unreachable::Wait,
            manual: Unreachable::Wait,
            reload: Unreachable::Wait,
            acknowledged_override: Unreachable::Proceed,
            kill_switch: Unreachable::Proceed,
        };
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (who, action) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not `who=action`"))?;
            let action = match action.trim() {
                "wait" => Unreachable::Wait,
                "proceed" => Unreachable::Proceed,
                "refuse" => Unreachable::Refuse,
                other => {
                    return Err(format!(
                        "{other:?} is not an action: wait, proceed or refuse"
                    ));
                }
            };
            let slot = match who.trim() {
                "auto" => &mut r.auto,
                "manual" => &mut r.manual,
                "reload" => &mut r.reload,
                "override" => &mut r.acknowledged_override,
                "kill_switch" => &mut r.kill_switch,
                other => {
                    return Err(format!(
                        "{other:?} is not a source: auto, manual, reload, override or kill_switch"
                    ));
                }
            };
            *slot = action;
        }
        Ok(r)
    }
}

impl std::fmt::Display for UnreachableRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "auto={},manual={},reload={},override={},kill_switch={}",
            self.auto.as_str(),
            self.manual.as_str(),
            self.reload.as_str(),
            self.acknowledged_override.as_str(),
            self.kill_switch.as_str()
        )
    }
}

/// Alertmanager label matchers (`WARDEN_ALERT_MATCHERS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMatchers(pub crate::platform::alertmanager::Matchers);

impl std::str::FromStr for AlertMatchers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(AlertMatchers).map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for AlertMatchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for AlertMatchers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
