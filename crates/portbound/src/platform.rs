//! Which platform the process runs on, detected from the variables each one
//! injects, and the one table of defaults that follows from its contract.
//!
//! Every fact here comes from the platforms' runtime contracts (each with
//! its source in deploy/README.md, and the links below).

use ipnet::IpNet;
use serde::Serialize;
use utoipa::ToSchema;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `TIME LEVEL target: message`, for a terminal.
    Text,
    /// `key=value` pairs, which Heroku's and Fly's log tools parse.
    Logfmt,
    /// One JSON object a line, in the shape Google Cloud Logging parses
    /// (`severity`, `message`, `httpRequest`, trace).
    Json,
}

impl LogFormat {
    /// The format named `v` (`text`, `logfmt` or `json`), if it is one.
    pub fn parse(v: &str) -> Option<LogFormat> {
        match v.to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "logfmt" => Some(LogFormat::Logfmt),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// The platform the process was started by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    /// Heroku sets `DYNO` (`web.1`) on every dyno.
    Heroku,
    /// Fly.io sets `FLY_APP_NAME` on every Machine.
    Fly,
    /// Google Cloud Run sets `K_SERVICE`, `K_REVISION`, `K_CONFIGURATION`.
    CloudRun,
    /// Railway sets a family of `RAILWAY_*` variables.
    Railway,
    /// Render sets `RENDER=true`.
    Render,
    /// Any Kubernetes pod sees `KUBERNETES_SERVICE_HOST`.
    Kubernetes,
    /// None of the above: a laptop, a VM, plain Docker.
    Local,
}

/// Defaults that follow from a platform's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformDefaults {
    /// Seconds in-flight requests get to finish after the stop signal. Always
    /// below the platform's grace period so our drain ends before its SIGKILL.
    pub shutdown_timeout_secs: u64,
    /// Seconds to keep serving (with `/readyz` at 503) before closing the
    /// listener, for platforms that remove an instance from rotation
    /// asynchronously after sending SIGTERM.
    pub shutdown_delay_secs: u64,
    /// The log format the platform's log tooling parses.
    pub log_format: LogFormat,
    /// Peers whose forwarding headers (`X-Forwarded-For`, `Forwarded`, ...)
    /// we believe.
    pub trusted_proxies: &'static str,
}

/// Every address: on these platforms the only peer that can reach the
/// instance is the platform's own router, which overwrites or appends the
/// forwarding headers.
const TRUST_ROUTER: &str = "0.0.0.0/0, ::/0";
/// Loopback and the private ranges an in-cluster ingress controller or load
/// balancer connects from.
const TRUST_PRIVATE: &str =
    "127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7";
/// Loopback only: a reverse proxy on the same machine (nginx in front of a
/// laptop server); anyone else is a client.
const TRUST_LOOPBACK: &str = "127.0.0.0/8, ::1/128";

/// Parses a list of CIDRs (or bare addresses) separated by commas or spaces.
pub fn parse_cidrs(v: &str) -> Result<Vec<IpNet>, String> {
    v.split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| s.to_owned())
        })
        .collect()
}

/// Railway sends SIGKILL right after SIGTERM unless a draining period is set;
/// with one, we finish this many seconds (at least) before it ends.
const RAILWAY_DRAIN_MARGIN_SECS: u64 = 5;

impl Platform {
    /// Detects the platform from a variable lookup. Order matters only where
    /// one platform runs on another (Cloud Run is built on Knative, so it is
    /// checked before the generic Kubernetes marker).
    pub fn detect(get: impl Fn(&str) -> Option<String>, names: &[String]) -> Platform {
        if get("DYNO").is_some() {
            Platform::Heroku
        } else if get("FLY_APP_NAME").is_some() {
            Platform::Fly
        } else if get("K_SERVICE").is_some() {
            Platform::CloudRun
        } else if names.iter().any(|n| n.starts_with("RAILWAY_")) {
            Platform::Railway
        } else if get("RENDER").is_some() {
            Platform::Render
        } else if get("KUBERNETES_SERVICE_HOST").is_some() {
            Platform::Kubernetes
        } else {
            Platform::Local
        }
    }

    /// The defaults table. `railway_draining_secs` is Railway's
    /// `RAILWAY_DEPLOYMENT_DRAINING_SECONDS`, when set.
    pub fn defaults(self, railway_draining_secs: Option<u64>) -> PlatformDefaults {
        use LogFormat::*;
        let (log_format, trusted_proxies) = match self {
            // Cloud Logging turns JSON lines into structured entries.
            // https://cloud.google.com/logging/docs/structured-logging
            Platform::CloudRun => (Json, TRUST_ROUTER),
            // Heroku's and Fly's log tooling reads logfmt (key=value).
            // https://devcenter.heroku.com/articles/logging#log-format
            Platform::Heroku | Platform::Fly | Platform::Render => (Logfmt, TRUST_ROUTER),
            // Railway turns JSON lines into structured, filterable logs.
            Platform::Railway => (Json, TRUST_ROUTER),
            Platform::Kubernetes => (Json, TRUST_PRIVATE),
            Platform::Local => (Text, TRUST_LOOPBACK),
        };
        let (shutdown_timeout_secs, shutdown_delay_secs) = match self {
            // Heroku: SIGTERM, then SIGKILL 30 s later, not configurable.
            // https://devcenter.heroku.com/articles/dynos#graceful-shutdown-with-sigterm
            Platform::Heroku => (25, 0),
            // Cloud Run: SIGTERM, then SIGKILL 10 s later.
            // https://cloud.google.com/run/docs/container-contract#instance-shutdown
            Platform::CloudRun => (8, 0),
            // Railway: SIGKILL at 0 s unless the service sets
            // RAILWAY_DEPLOYMENT_DRAINING_SECONDS; the shipped
            // .railway/railway.ts sets 30, so we drain for 25 there.
            // https://docs.railway.com/reference/variables
            Platform::Railway => (
                railway_draining_secs
                    .map(|s| s.saturating_sub(RAILWAY_DRAIN_MARGIN_SECS).max(1))
                    .unwrap_or(25),
                0,
            ),
            // Kubernetes: terminationGracePeriodSeconds defaults to 30 s and
            // covers the delay and the drain together; endpoints are removed
            // asynchronously, so keep serving 5 s first.
            // https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination
            Platform::Kubernetes => (20, 5),
            // Fly: kill_timeout defaults to 5 s, but the shipped fly.toml sets
            // 30 s. Render: maxShutdownDelaySeconds defaults to 30 s. Local and
            // Docker Compose (stop_grace_period 30 s in the shipped file).
            Platform::Fly | Platform::Render | Platform::Local => (25, 0),
        };
        PlatformDefaults {
            shutdown_timeout_secs,
            shutdown_delay_secs,
            log_format,
            trusted_proxies,
        }
    }

    /// The name used in logs and in `/api/v1/info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Heroku => "heroku",
            Platform::Fly => "fly",
            Platform::CloudRun => "cloud-run",
            Platform::Railway => "railway",
            Platform::Render => "render",
            Platform::Kubernetes => "kubernetes",
            Platform::Local => "local",
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the platform tells us about this instance, shown by `/api/v1/info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct InstanceFacts {
    /// The app or service name the platform knows us by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The region the instance runs in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// This instance (dyno, machine, replica, pod).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The release, revision or image the instance runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

impl InstanceFacts {
    /// Collects the facts each platform injects (names from its docs).
    pub fn detect(platform: Platform, get: impl Fn(&str) -> Option<String>) -> InstanceFacts {
        let pick = |names: &[&str]| names.iter().find_map(|n| get(n).filter(|v| !v.is_empty()));
        match platform {
            Platform::Heroku => InstanceFacts {
                service: pick(&["HEROKU_APP_NAME"]),
                region: None,
                instance: pick(&["DYNO"]),
                revision: pick(&["HEROKU_RELEASE_VERSION", "HEROKU_SLUG_COMMIT"]),
            },
            Platform::Fly => InstanceFacts {
                service: pick(&["FLY_APP_NAME"]),
                region: pick(&["FLY_REGION"]),
                instance: pick(&["FLY_MACHINE_ID", "FLY_ALLOC_ID"]),
                revision: pick(&["FLY_IMAGE_REF"]),
            },
            Platform::CloudRun => InstanceFacts {
                service: pick(&["K_SERVICE"]),
                region: None,
                instance: None,
                revision: pick(&["K_REVISION"]),
            },
            Platform::Railway => InstanceFacts {
                service: pick(&["RAILWAY_SERVICE_NAME"]),
                region: pick(&["RAILWAY_REPLICA_REGION"]),
                instance: pick(&["RAILWAY_REPLICA_ID"]),
                revision: pick(&["RAILWAY_DEPLOYMENT_ID", "RAILWAY_GIT_COMMIT_SHA"]),
            },
            Platform::Render => InstanceFacts {
                service: pick(&["RENDER_SERVICE_NAME"]),
                region: None,
                instance: pick(&["RENDER_INSTANCE_ID"]),
                revision: pick(&["RENDER_GIT_COMMIT"]),
            },
            Platform::Kubernetes | Platform::Local => InstanceFacts {
                service: None,
                region: None,
                instance: pick(&["HOSTNAME"]),
                revision: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn detect(vars: &[(&str, &str)]) -> Platform {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names: Vec<String> = map.keys().cloned().collect();
        Platform::detect(|k| map.get(k).cloned(), &names)
    }

    #[test]
    fn detects_each_platform_from_what_it_injects() {
        assert_eq!(detect(&[("DYNO", "web.1")]), Platform::Heroku);
        assert_eq!(detect(&[("FLY_APP_NAME", "pb")]), Platform::Fly);
        assert_eq!(detect(&[("K_SERVICE", "pb")]), Platform::CloudRun);
        assert_eq!(detect(&[("RAILWAY_SERVICE_NAME", "pb")]), Platform::Railway);
        assert_eq!(detect(&[("RENDER", "true")]), Platform::Render);
        assert_eq!(
            detect(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")]),
            Platform::Kubernetes
        );
        assert_eq!(detect(&[]), Platform::Local);
        // Cloud Run runs on Knative: its own marker wins over Kubernetes'.
        assert_eq!(
            detect(&[("K_SERVICE", "pb"), ("KUBERNETES_SERVICE_HOST", "x")]),
            Platform::CloudRun
        );
    }

    #[test]
    fn every_drain_budget_ends_before_the_platform_kills() {
        // (platform, grace period before SIGKILL)
        for (platform, grace) in [
            (Platform::Heroku, 30),
            (Platform::CloudRun, 10),
            (Platform::Kubernetes, 30),
            (Platform::Render, 30),
            (Platform::Fly, 30),
        ] {
            let d = platform.defaults(None);
            assert!(
                d.shutdown_delay_secs + d.shutdown_timeout_secs < grace,
                "{platform}: {d:?} does not fit in {grace} s"
            );
        }
        assert_eq!(
            Platform::Railway.defaults(Some(30)).shutdown_timeout_secs,
            25
        );
        assert_eq!(Platform::Railway.defaults(Some(1)).shutdown_timeout_secs, 1);
    }

    #[test]
    fn every_default_proxy_list_parses() {
        for p in [
            Platform::Heroku,
            Platform::Fly,
            Platform::CloudRun,
            Platform::Railway,
            Platform::Render,
            Platform::Kubernetes,
            Platform::Local,
        ] {
            let nets = parse_cidrs(p.defaults(None).trusted_proxies).unwrap();
            assert!(!nets.is_empty(), "{p}");
        }
        assert_eq!(parse_cidrs("10.0.0.0/8, 192.0.2.1 ::1").unwrap().len(), 3);
        assert_eq!(parse_cidrs("10.0.0.0/33"), Err("10.0.0.0/33".to_owned()));
    }
}
