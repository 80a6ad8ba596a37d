//! Which platform the process runs on, detected from the variables each one
//! injects; each platform's runtime contract ([`Platform::contract`]), one
//! fact a field, each with the page that states it; and the one table of
//! defaults that follows from those contracts ([`Platform::defaults`]).
//!
//! Every fact here comes from the platforms' own documentation (the same
//! sources deploy/README.md and PLATFORMS.md cite). The defaults and
//! `SERVICE doctor` (the `doctor` module) both read the contract table, so a
//! number such as Heroku's 30 s lives in one place.

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

/// Seconds our drain ends before the platform's SIGKILL: time to flush the
/// log and exit. Cloud Run's 10 s cannot spare 5 (see `drain_margin_secs`).
const DRAIN_MARGIN_SECS: u64 = 5;
/// Seconds a Kubernetes pod keeps serving after SIGTERM while its endpoint
/// is removed (`SHUTDOWN_DELAY`).
const K8S_ENDPOINT_REMOVAL_SECS: u64 = 5;

// ---------------------------------------------------------------------------
// The contract table
// ---------------------------------------------------------------------------

/// One fact of a platform's runtime contract, with the page that states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact<T> {
    /// The fact.
    pub value: T,
    /// Where the platform documents it.
    pub source: &'static str,
}

/// How the process learns which port to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRule {
    /// The platform sets `PORT` itself: to `default` unless the service
    /// sets `PORT` (`None`: a value assigned per instance).
    Injected {
        /// The value it injects, when it is a fixed one.
        default: Option<u16>,
    },
    /// The platform sets `PORT` from a setting of the manifest (Cloud Run's
    /// `containerPort`); the service may not set `PORT` itself.
    FromSetting {
        /// The manifest's key.
        key: &'static str,
        /// Its default.
        default: u16,
    },
    /// Nothing is injected: the platform dials the port a manifest setting
    /// names, so `PORT` must be set to the same value.
    Dialed {
        /// The manifest's key.
        key: &'static str,
        /// Its default, if it has one.
        default: Option<u16>,
    },
    /// The service manager binds the socket and hands it over
    /// (`LISTEN_FDS`); the runtime serves it instead of `PORT`.
    Inherited {
        /// The unit's key that names the address.
        key: &'static str,
    },
}

/// How long the platform waits between the stop signal and SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grace {
    /// Fixed by the platform.
    Fixed {
        /// Seconds.
        secs: u64,
    },
    /// A setting of the service's manifest.
    Setting {
        /// The manifest's key (or variable).
        key: &'static str,
        /// Seconds when the manifest does not set it.
        default: u64,
        /// The largest value the platform accepts, if it caps it.
        max: Option<u64>,
        /// What a manifest should set: the default where the default leaves
        /// room for a drain, more where it does not (Fly's 5 s, Docker's
        /// 10 s, Railway's 0 s). The runtime's default drain is sized for it.
        recommended: u64,
    },
}

impl Grace {
    /// Seconds before SIGKILL when the manifest says nothing.
    pub fn default_secs(self) -> u64 {
        match self {
            Grace::Fixed { secs } => secs,
            Grace::Setting { default, .. } => default,
        }
    }

    /// The grace the runtime's default drain is sized for: the fixed value,
    /// or the recommended setting.
    pub fn sized_for(self) -> u64 {
        match self {
            Grace::Fixed { secs } => secs,
            Grace::Setting { recommended, .. } => recommended,
        }
    }
}

/// The signal the platform sends to stop the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalRule {
    /// What it sends unless told otherwise.
    pub default: &'static str,
    /// The manifest's key that changes it, if there is one.
    pub setting: Option<&'static str>,
}

/// What a platform does to a port-bound process: how it learns its port,
/// how it is stopped, probed, started and released, and what it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contract {
    /// The platform's name, for messages.
    pub name: &'static str,
    /// How the port reaches the process.
    pub port: Fact<PortRule>,
    /// The stop signal.
    pub stop_signal: Fact<SignalRule>,
    /// Time between the stop signal and SIGKILL.
    pub grace: Fact<Grace>,
    /// What the platform probes, and what passes.
    pub health_check: Fact<&'static str>,
    /// Seconds a new instance has to come up, when the platform fixes or
    /// defaults one (`None`: the service's own probes decide).
    pub boot_deadline: Fact<Option<u64>>,
    /// Where a release command (migrations) runs, if the platform has one.
    pub release_phase: Fact<&'static str>,
    /// Variables the platform sets in the process's environment.
    pub injected: Fact<&'static [&'static str]>,
}

const HEROKU: Contract = Contract {
    name: "Heroku",
    port: Fact {
        value: PortRule::Injected { default: None },
        source: "https://devcenter.heroku.com/articles/dynos#local-environment-variables",
    },
    // Heroku's runtime ignores STOPSIGNAL: every process gets SIGTERM.
    // https://devcenter.heroku.com/articles/container-registry-and-runtime#unsupported-dockerfile-commands
    stop_signal: Fact {
        value: SignalRule {
            default: "SIGTERM",
            setting: None,
        },
        source: "https://devcenter.heroku.com/articles/dyno-shutdown-behavior",
    },
    // "The application processes have 30 seconds to shut down cleanly ...
    // the dyno manager terminates them forcefully with SIGKILL."
    grace: Fact {
        value: Grace::Fixed { secs: 30 },
        source: "https://devcenter.heroku.com/articles/dynos#graceful-shutdown-with-sigterm",
    },
    health_check: Fact {
        value: "none to configure: the router sends traffic once PORT is bound; Docker HEALTHCHECK is ignored",
        source: "https://devcenter.heroku.com/articles/container-registry-and-runtime#unsupported-dockerfile-commands",
    },
    // R10: a web dyno that has not bound PORT in 60 s is killed.
    boot_deadline: Fact {
        value: Some(60),
        source: "https://devcenter.heroku.com/articles/error-codes#r10-boot-timeout",
    },
    release_phase: Fact {
        value: "heroku.yml `release:` (image + command), run in a one-off dyno of the new image",
        source: "https://devcenter.heroku.com/articles/release-phase",
    },
    injected: Fact {
        value: &["PORT", "DYNO"],
        source: "https://devcenter.heroku.com/articles/dynos#local-environment-variables",
    },
};

const FLY: Contract = Contract {
    name: "Fly.io",
    port: Fact {
        value: PortRule::Dialed {
            key: "internal_port",
            default: Some(8080),
        },
        source: "https://fly.io/docs/reference/configuration/#the-http_service-section",
    },
    // "kill_signal: defaults to SIGINT" (and SIGINT is what actix-web treats
    // as a forced stop; the runtime drains on it too).
    stop_signal: Fact {
        value: SignalRule {
            default: "SIGINT",
            setting: Some("kill_signal"),
        },
        source: "https://fly.io/docs/reference/configuration/#runtime-options",
    },
    // "kill_timeout ... The default is 5 seconds"; shared-CPU Machines allow
    // up to 5 minutes. https://fly.io/blog/graceful-vm-exits-some-dials/
    grace: Fact {
        value: Grace::Setting {
            key: "kill_timeout",
            default: 5,
            max: Some(300),
            recommended: 30,
        },
        source: "https://fly.io/docs/reference/configuration/#runtime-options",
    },
    health_check: Fact {
        value: "[[http_service.checks]] path, interval, timeout, grace_period; any 2xx passes",
        source: "https://fly.io/docs/reference/configuration/#http_service-checks",
    },
    // `fly deploy` waits 5 minutes for a Machine to pass its checks.
    boot_deadline: Fact {
        value: Some(300),
        source: "https://fly.io/docs/reference/configuration/#the-deploy-section",
    },
    release_phase: Fact {
        value: "[deploy] release_command, in a temporary Machine of the new image",
        source: "https://fly.io/docs/reference/configuration/#run-one-off-commands-before-releasing-a-deployment",
    },
    injected: Fact {
        value: &[
            "FLY_APP_NAME",
            "FLY_REGION",
            "FLY_MACHINE_ID",
            "FLY_ALLOC_ID",
            "FLY_IMAGE_REF",
            "PRIMARY_REGION",
            "FLY_PRIVATE_IP",
        ],
        source: "https://fly.io/docs/machines/runtime-environment/",
    },
};

const CLOUD_RUN: Contract = Contract {
    name: "Cloud Run",
    // PORT is set from containerPort (8080 by default) and is reserved.
    port: Fact {
        value: PortRule::FromSetting {
            key: "containerPort",
            default: 8080,
        },
        source: "https://cloud.google.com/run/docs/container-contract#port",
    },
    stop_signal: Fact {
        value: SignalRule {
            default: "SIGTERM",
            setting: None,
        },
        source: "https://cloud.google.com/run/docs/container-contract#instance-shutdown",
    },
    // "your application will have 10 seconds to exit. If the container does
    // not exit by then, a SIGKILL signal ... will be sent".
    grace: Fact {
        value: Grace::Fixed { secs: 10 },
        source: "https://cloud.google.com/run/docs/container-contract#instance-shutdown",
    },
    health_check: Fact {
        value: "startupProbe / livenessProbe in service.yaml (HTTP/1 GET; 200-399 passes); default: a TCP startup probe",
        source: "https://cloud.google.com/run/docs/configuring/healthchecks",
    },
    // The default TCP startup probe allows 240 s.
    boot_deadline: Fact {
        value: Some(240),
        source: "https://cloud.google.com/run/docs/configuring/healthchecks",
    },
    release_phase: Fact {
        value: "none: run a Cloud Run job of the same image to completion before deploying",
        source: "https://cloud.google.com/sdk/gcloud/reference/run/jobs/deploy",
    },
    injected: Fact {
        value: &["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"],
        source: "https://cloud.google.com/run/docs/container-contract#env-vars",
    },
};

const RAILWAY: Contract = Contract {
    name: "Railway",
    port: Fact {
        value: PortRule::Injected { default: None },
        source: "https://docs.railway.com/guides/public-networking#port-variable",
    },
    // The previous deployment "is sent a SIGTERM signal and given time to
    // gracefully shutdown before being forcefully stopped with a SIGKILL".
    stop_signal: Fact {
        value: SignalRule {
            default: "SIGTERM",
            setting: None,
        },
        source: "https://docs.railway.com/guides/deployment-teardown#draining-time",
    },
    // A service variable the service sets itself ("user-provided
    // configuration"), 0 unless set: SIGKILL right after SIGTERM. The
    // shipped .railway/railway.ts sets 30.
    grace: Fact {
        value: Grace::Setting {
            key: "RAILWAY_DEPLOYMENT_DRAINING_SECONDS",
            default: 0,
            max: None,
            recommended: 30,
        },
        source: "https://docs.railway.com/reference/variables#user-provided-configuration-variables",
    },
    health_check: Fact {
        value: "healthcheck path, polled only while a deployment goes live, until it answers 200",
        source: "https://docs.railway.com/reference/healthchecks",
    },
    // healthcheckTimeout, 300 s by default.
    boot_deadline: Fact {
        value: Some(300),
        source: "https://docs.railway.com/reference/healthchecks",
    },
    release_phase: Fact {
        value: "preDeployCommand, in a separate container of the new image",
        source: "https://docs.railway.com/guides/pre-deploy-command",
    },
    injected: Fact {
        value: &[
            "PORT",
            "RAILWAY_ENVIRONMENT_NAME",
            "RAILWAY_SERVICE_NAME",
            "RAILWAY_REPLICA_ID",
            "RAILWAY_PUBLIC_DOMAIN",
            "RAILWAY_DEPLOYMENT_ID",
        ],
        source: "https://docs.railway.com/reference/variables#railway-provided-variables",
    },
};

const RENDER: Contract = Contract {
    name: "Render",
    // PORT is 10000 unless the service sets it.
    port: Fact {
        value: PortRule::Injected {
            default: Some(10000),
        },
        source: "https://render.com/docs/web-services#port-binding",
    },
    stop_signal: Fact {
        value: SignalRule {
            default: "SIGTERM",
            setting: None,
        },
        source: "https://render.com/docs/deploys#zero-downtime-deploys",
    },
    // maxShutdownDelaySeconds: integer, 1 to 300, default 30 (Render's
    // blueprint schema, render.com/schema/render.yaml.json).
    grace: Fact {
        value: Grace::Setting {
            key: "maxShutdownDelaySeconds",
            default: 30,
            max: Some(300),
            recommended: 30,
        },
        source: "https://render.com/docs/blueprint-spec#maxshutdowndelayseconds",
    },
    health_check: Fact {
        value: "healthCheckPath; 2xx or 3xx passes, 5 s timeout",
        source: "https://render.com/docs/health-checks",
    },
    // A deploy fails after 15 minutes of failing checks.
    boot_deadline: Fact {
        value: Some(900),
        source: "https://render.com/docs/health-checks",
    },
    release_phase: Fact {
        value: "preDeployCommand (paid instance types), before traffic switches",
        source: "https://render.com/docs/deploys#pre-deploy-command",
    },
    injected: Fact {
        value: &[
            "PORT",
            "RENDER",
            "RENDER_EXTERNAL_URL",
            "RENDER_EXTERNAL_HOSTNAME",
        ],
        source: "https://render.com/docs/environment-variables#all-runtimes",
    },
};

const KUBERNETES: Contract = Contract {
    name: "Kubernetes",
    port: Fact {
        value: PortRule::Dialed {
            key: "containerPort",
            default: None,
        },
        source: "https://kubernetes.io/docs/concepts/services-networking/service/#defining-a-service",
    },
    // SIGTERM (or the image's STOPSIGNAL), after the preStop hook.
    stop_signal: Fact {
        value: SignalRule {
            default: "SIGTERM",
            setting: Some("STOPSIGNAL"),
        },
        source: "https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination",
    },
    // terminationGracePeriodSeconds, 30 by default; "the Pod's termination
    // grace period countdown begins before the PreStop hook is executed".
    grace: Fact {
        value: Grace::Setting {
            key: "terminationGracePeriodSeconds",
            default: 30,
            max: None,
            recommended: 30,
        },
        source: "https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination",
    },
    health_check: Fact {
        value: "startup, liveness and readiness probes (httpGet: 200-399 passes)",
        source: "https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/",
    },
    boot_deadline: Fact {
        value: None,
        source: "https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/",
    },
    release_phase: Fact {
        value: "none: a Job (or an init container) of the same image",
        source: "https://kubernetes.io/docs/concepts/workloads/controllers/job/",
    },
    injected: Fact {
        value: &[
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "HOSTNAME",
        ],
        source: "https://kubernetes.io/docs/concepts/services-networking/service/#environment-variables",
    },
};

/// Plain Docker and Docker Compose: what `Platform::Local` means in a
/// container.
const DOCKER: Contract = Contract {
    name: "Docker / Compose",
    port: Fact {
        value: PortRule::Dialed {
            key: "ports (HOST:CONTAINER)",
            default: None,
        },
        source: "https://docs.docker.com/reference/compose-file/services/#ports",
    },
    // The image's STOPSIGNAL, or compose's stop_signal; SIGTERM otherwise.
    stop_signal: Fact {
        value: SignalRule {
            default: "SIGTERM",
            setting: Some("stop_signal"),
        },
        source: "https://docs.docker.com/reference/compose-file/services/#stop_signal",
    },
    // "Default value is 10 seconds for the container to exit before sending
    // SIGKILL" (compose-spec 05-services.md, stop_grace_period; `docker
    // stop -t` defaults to 10 too).
    grace: Fact {
        value: Grace::Setting {
            key: "stop_grace_period",
            default: 10,
            max: None,
            recommended: 30,
        },
        source: "https://docs.docker.com/reference/compose-file/services/#stop_grace_period",
    },
    health_check: Fact {
        value: "HEALTHCHECK / compose healthcheck: a command run inside the container; exit 0 passes",
        source: "https://docs.docker.com/reference/dockerfile/#healthcheck",
    },
    boot_deadline: Fact {
        value: None,
        source: "https://docs.docker.com/reference/compose-file/services/#healthcheck",
    },
    release_phase: Fact {
        value: "none",
        source: "https://docs.docker.com/reference/compose-file/services/",
    },
    injected: Fact {
        value: &["HOSTNAME"],
        source: "https://docs.docker.com/reference/cli/docker/container/run/#env",
    },
};

/// systemd units on a VM (the runtime detects that as [`Platform::Local`]):
/// the contract `doctor` checks `deploy/systemd/` against.
pub const SYSTEMD: Contract = Contract {
    name: "systemd",
    port: Fact {
        value: PortRule::Inherited {
            key: "ListenStream",
        },
        source: "https://www.freedesktop.org/software/systemd/man/latest/systemd.socket.html#ListenStream=",
    },
    // "KillSignal= Specifies which signal to use when killing a service.
    // Defaults to SIGTERM."
    stop_signal: Fact {
        value: SignalRule {
            default: "SIGTERM",
            setting: Some("KillSignal"),
        },
        source: "https://www.freedesktop.org/software/systemd/man/latest/systemd.kill.html#KillSignal=",
    },
    // TimeoutStopSec= "Defaults to DefaultTimeoutStopSec= from the manager
    // configuration file", which is 90 s.
    grace: Fact {
        value: Grace::Setting {
            key: "TimeoutStopSec",
            default: 90,
            max: None,
            recommended: 30,
        },
        source: "https://www.freedesktop.org/software/systemd/man/latest/systemd.service.html#TimeoutStopSec=",
    },
    health_check: Fact {
        value: "none: systemd restarts a crashed process (Restart=), it does not probe",
        source: "https://www.freedesktop.org/software/systemd/man/latest/systemd.service.html#Restart=",
    },
    boot_deadline: Fact {
        value: Some(90),
        source: "https://www.freedesktop.org/software/systemd/man/latest/systemd.service.html#TimeoutStartSec=",
    },
    release_phase: Fact {
        value: "none: ExecStartPre= runs before every start, not once per release",
        source: "https://www.freedesktop.org/software/systemd/man/latest/systemd.service.html#ExecStartPre=",
    },
    injected: Fact {
        value: &["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"],
        source: "https://www.freedesktop.org/software/systemd/man/latest/sd_listen_fds.html",
    },
};

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
        // The drain is sized from the contract table: it ends a margin
        // before the grace the platform gives (fixed, its default, or, where
        // the default is too short to drain anything, the value the shipped
        // manifests set and `doctor` asks for): Heroku 30 - 5 = 25, Cloud
        // Run 10 - 2 = 8, Kubernetes 30 - 5 (delay) - 5 = 20, Fly, Render,
        // Railway and Docker 30 - 5 = 25.
        let grace = self.contract().grace.value;
        let shutdown_delay_secs = match self {
            // Kubernetes removes a terminating pod from the Service's
            // endpoints asynchronously, so keep serving (readiness at 503)
            // for a few seconds first.
            // https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination
            Platform::Kubernetes => K8S_ENDPOINT_REMOVAL_SECS,
            _ => 0,
        };
        let shutdown_timeout_secs = match (self, railway_draining_secs) {
            // Railway with its draining time set: that time is the grace.
            (Platform::Railway, Some(draining)) => {
                draining.saturating_sub(self.drain_margin_secs()).max(1)
            }
            _ => grace.sized_for() - shutdown_delay_secs - self.drain_margin_secs(),
        };
        PlatformDefaults {
            shutdown_timeout_secs,
            shutdown_delay_secs,
            log_format,
            trusted_proxies,
        }
    }

    /// The platform's runtime contract, each fact with its source. `Local`
    /// is plain Docker / Docker Compose; systemd's is [`SYSTEMD`].
    pub fn contract(self) -> Contract {
        match self {
            Platform::Heroku => HEROKU,
            Platform::Fly => FLY,
            Platform::CloudRun => CLOUD_RUN,
            Platform::Railway => RAILWAY,
            Platform::Render => RENDER,
            Platform::Kubernetes => KUBERNETES,
            Platform::Local => DOCKER,
        }
    }

    /// Seconds between the end of our drain and the platform's SIGKILL.
    fn drain_margin_secs(self) -> u64 {
        match self {
            // 10 s in all: 8 to drain leaves 2 to flush and exit.
            Platform::CloudRun => 2,
            _ => DRAIN_MARGIN_SECS,
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
    fn the_defaults_read_from_the_contract_table_are_the_ones_shipped() {
        // (platform, SHUTDOWN_TIMEOUT, SHUTDOWN_DELAY) as they were written
        // out before the contract table existed: the table must not move them.
        for (platform, timeout, delay) in [
            (Platform::Heroku, 25, 0),
            (Platform::CloudRun, 8, 0),
            (Platform::Railway, 25, 0),
            (Platform::Kubernetes, 20, 5),
            (Platform::Fly, 25, 0),
            (Platform::Render, 25, 0),
            (Platform::Local, 25, 0),
        ] {
            let d = platform.defaults(None);
            assert_eq!(
                (d.shutdown_timeout_secs, d.shutdown_delay_secs),
                (timeout, delay),
                "{platform}"
            );
        }
        assert_eq!(
            Platform::Railway.defaults(Some(60)).shutdown_timeout_secs,
            55
        );
        assert_eq!(Platform::Railway.defaults(Some(0)).shutdown_timeout_secs, 1);
    }

    #[test]
    fn every_contract_fact_has_a_source() {
        let all = [
            Platform::Heroku,
            Platform::Fly,
            Platform::CloudRun,
            Platform::Railway,
            Platform::Render,
            Platform::Kubernetes,
            Platform::Local,
        ]
        .map(Platform::contract);
        for c in all.iter().chain([&SYSTEMD]) {
            for source in [
                c.port.source,
                c.stop_signal.source,
                c.grace.source,
                c.health_check.source,
                c.boot_deadline.source,
                c.release_phase.source,
                c.injected.source,
            ] {
                assert!(source.starts_with("https://"), "{}: {source}", c.name);
            }
        }
        assert_eq!(Platform::Heroku.contract().grace.value.default_secs(), 30);
        assert_eq!(Platform::Fly.contract().grace.value.default_secs(), 5);
        assert_eq!(Platform::Fly.contract().stop_signal.value.default, "SIGINT");
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
