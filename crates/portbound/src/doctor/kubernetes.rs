//! Kubernetes: every `*.yaml`/`*.yml` in `deploy/kubernetes/` (each file
//! may hold several documents). The Deployments (and StatefulSets) are
//! checked with the Services and HorizontalPodAutoscalers beside them.
//!
//! Checks: `PORT` is a `containerPort`, and every probe and Service dials
//! it (`k8s-port`: Kubernetes injects no `PORT`);
//! `terminationGracePeriodSeconds` outlasts the preStop hook plus the
//! drain (`k8s-grace`); a preStop hook can run in the image and does not
//! double `SHUTDOWN_DELAY` (`k8s-prestop`); no `replicas` beside an HPA
//! (`k8s-replicas`); every probe hits a route (`probe-path`); the env
//! holds values the runtime accepts (`invalid-variable`).

use serde_norway::Value as Yaml;

use super::locate::{Index, Key, Seg, yaml_line};
use super::{Ctx, Finding, Stop, bound_port, yaml_documents, yaml_error_line, yaml_scalar};
use crate::platform::Platform;

const DIR: &str = "deploy/kubernetes";
const PROBES: [&str; 3] = ["startupProbe", "livenessProbe", "readinessProbe"];
/// The Kubernetes API reference.
const FORMAT: &str = "https://kubernetes.io/docs/reference/kubernetes-api/";
const HOOKS: &str = "https://kubernetes.io/docs/concepts/containers/container-lifecycle-hooks/#hook-handler-execution";

/// One document of one file.
struct Doc {
    file: String,
    index: usize,
    text: std::rc::Rc<str>,
    value: Yaml,
}

impl Doc {
    fn kind(&self) -> Option<&str> {
        self.value["kind"].as_str()
    }

    fn line(&self, path: &[Seg<'_>]) -> Option<usize> {
        yaml_line(&self.text, self.index, path)
    }
}

/// Checks the manifests in deploy/kubernetes/.
pub(crate) fn check(ctx: &mut Ctx<'_>) {
    let k8s = Platform::Kubernetes.contract();
    let mut docs = Vec::new();
    for file in super::yaml_files(ctx, DIR) {
        let Some(text) = ctx.read(&file) else {
            continue;
        };
        match yaml_documents(&text) {
            Err(e) => ctx.parse_error(&file, yaml_error_line(&e), &e, (k8s.name, FORMAT)),
            Ok(values) => {
                let text: std::rc::Rc<str> = text.into();
                // Empty documents (a trailing `---`) are not counted by the
                // line scanner either.
                let values = values.into_iter().filter(|v| !v.is_null());
                for (index, value) in values.enumerate() {
                    docs.push(Doc {
                        file: file.clone(),
                        index,
                        text: text.clone(),
                        value,
                    });
                }
            }
        }
    }
    for d in docs
        .iter()
        .filter(|d| matches!(d.kind(), Some("Deployment" | "StatefulSet")))
    {
        workload(ctx, d, &docs);
    }
}

fn workload(ctx: &mut Ctx<'_>, d: &Doc, docs: &[Doc]) {
    let k8s = Platform::Kubernetes.contract();
    let file = d.file.as_str();
    let pod = &d.value["spec"]["template"];
    let containers = pod["spec"]["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let index = containers
        .iter()
        .position(|c| c["name"].as_str() == Some(ctx.binary))
        .unwrap_or(0);
    let Some(c) = containers.get(index) else {
        return;
    };
    let base = [
        Key("spec"),
        Key("template"),
        Key("spec"),
        Key("containers"),
        Index(index),
    ];
    let at = |more: &[Seg<'_>]| d.line(&[&base[..], more].concat());

    let env = super::container_env(c, at);
    let drain = ctx.drain(file, &env, &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")]);

    // containerPorts by name and number.
    let ports: Vec<(Option<String>, u64)> = c["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["name"].as_str().map(str::to_owned),
                p["containerPort"].as_u64()?,
            ))
        })
        .collect();
    let resolve = |port: &Yaml| -> Option<u64> {
        port.as_u64().or_else(|| {
            let name = port.as_str()?;
            ports
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name))
                .map(|(_, p)| *p)
        })
    };
    let port_fix = |bound: u16| {
        format!(
            "make PORT, the containerPort and every probe's and Service's port agree on {bound} \
             (name the containerPort `http` and refer to it by name)"
        )
    };
    if let Some(bound) = bound_port(ctx, &env) {
        let bound64 = u64::from(bound);
        let port_finding = |ctx: &mut Ctx<'_>, file: &str, line, message: String| {
            ctx.push(
                Finding::error("k8s-port", file, line)
                    .message(message)
                    .platform(
                        "Kubernetes injects no PORT: probes and Services dial the port they \
                         name, and a pod listening elsewhere never becomes Ready (or is \
                         restarted by its liveness probe)",
                    )
                    .source(k8s.port.source)
                    .fix(port_fix(bound)),
            );
        };
        if !ports.iter().any(|(_, p)| *p == bound64) {
            let line = at(&[Key("ports")]).or(at(&[Key("name")]));
            let listed: Vec<String> = ports.iter().map(|(_, p)| p.to_string()).collect();
            port_finding(
                ctx,
                file,
                line,
                format!(
                    "the server binds {bound}, but the container's ports are [{}]",
                    listed.join(", ")
                ),
            );
        }
        for probe in PROBES {
            let dialed = &c[probe]["httpGet"]["port"];
            if dialed.is_null() {
                continue;
            }
            let line = at(&[Key(probe), Key("httpGet"), Key("port")]);
            match resolve(dialed) {
                Some(p) if p == bound64 => {}
                Some(p) => port_finding(
                    ctx,
                    file,
                    line,
                    format!("{probe} dials port {p}, but the server binds {bound}"),
                ),
                None => port_finding(
                    ctx,
                    file,
                    line,
                    format!(
                        "{probe} dials port {}, which is no containerPort",
                        yaml_scalar(dialed).unwrap_or_default()
                    ),
                ),
            }
        }
        // Services that select this pod send traffic to a targetPort.
        let metrics = super::var(&env, "METRICS_PORT").and_then(|v| v.value.parse::<u64>().ok());
        let labels = &pod["metadata"]["labels"];
        for s in docs.iter().filter(|s| s.kind() == Some("Service")) {
            let Some(selector) = s.value["spec"]["selector"].as_mapping() else {
                continue;
            };
            if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            for (i, p) in s.value["spec"]["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let target = if p["targetPort"].is_null() {
                    &p["port"]
                } else {
                    &p["targetPort"]
                };
                let line = s.line(&[Key("spec"), Key("ports"), Index(i), Key("targetPort")]);
                let resolved = resolve(target);
                let ok = resolved.is_some_and(|t| t == bound64 || Some(t) == metrics);
                if !ok {
                    let target_text = yaml_scalar(target).unwrap_or_default();
                    let dials = match resolved {
                        Some(t) if target.is_string() => {
                            format!("{target_text} (containerPort {t})")
                        }
                        Some(_) => target_text,
                        None => format!("{target_text}, which is no containerPort,"),
                    };
                    port_finding(
                        ctx,
                        &s.file,
                        line,
                        format!(
                            "Service port {} targets {dials} but the server binds {bound} \
                             (METRICS_PORT {})",
                            yaml_scalar(&p["port"]).unwrap_or_default(),
                            metrics.map_or("unset".to_owned(), |m| m.to_string())
                        ),
                    );
                }
            }
        }
    }

    // preStop: runs before SIGTERM, inside the grace period.
    let pre_stop = &c["lifecycle"]["preStop"];
    let pre_stop_line = at(&[Key("lifecycle"), Key("preStop")]);
    let mut hook_secs = 0;
    if let Some(secs) = pre_stop["sleep"]["seconds"].as_u64() {
        hook_secs = secs;
        if drain.is_some_and(|d| d.delay > 0) {
            ctx.push(
                Finding::warning("k8s-prestop", file, pre_stop_line)
                    .message(format!(
                        "a preStop sleep of {secs} s and SHUTDOWN_DELAY {} both wait for the \
                         endpoint removal",
                        drain.map_or(0, |d| d.delay)
                    ))
                    .platform(
                        "Kubernetes runs the preStop hook first and sends SIGTERM after it, \
                         within the same grace period; the runtime's SHUTDOWN_DELAY then waits \
                         again, for traffic that has already stopped",
                    )
                    .source(HOOKS)
                    .fix("keep one: SHUTDOWN_DELAY (the runtime turns /readyz to 503 meanwhile) or the preStop sleep with SHUTDOWN_DELAY=0"),
            );
        }
    } else if let Some(command) = pre_stop["exec"]["command"].as_sequence() {
        let program = command.first().and_then(yaml_scalar).unwrap_or_default();
        let no_shell = ctx.image.as_ref().is_some_and(|i| i.no_shell);
        if no_shell && super::basename(&program) != ctx.binary {
            ctx.push(
                Finding::error("k8s-prestop", file, pre_stop_line)
                    .message(format!(
                        "the preStop hook runs {program}, which the image does not have (it \
                         holds only what the Dockerfile copies in)"
                    ))
                    .platform(
                        "the hook fails (FailedPreStopHook) and Kubernetes goes on to SIGTERM at \
                         once: the delay it was meant to add never happens",
                    )
                    .source(HOOKS)
                    .fix("remove the hook and set SHUTDOWN_DELAY (the runtime waits itself), or use `preStop: sleep: seconds: N`"),
            );
        }
    }

    let grace_line = d.line(&[
        Key("spec"),
        Key("template"),
        Key("spec"),
        Key("terminationGracePeriodSeconds"),
    ]);
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(k8s.grace.value.default_secs());
    if let Some(drain) = drain {
        // The hook's time comes out of the same grace period.
        let left = super::Drain {
            hook: hook_secs,
            ..drain
        };
        let stop = Stop {
            line: grace_line,
            secs: grace,
            signal: k8s.stop_signal.value.default,
        };
        ctx.grace("k8s-grace", file, stop, left, &k8s);
    }

    for probe in PROBES {
        if c[probe].get("httpGet").is_some() {
            let path = c[probe]["httpGet"]["path"].as_str().unwrap_or("/");
            let line = at(&[Key(probe), Key("httpGet"), Key("path")]).or(at(&[Key(probe)]));
            ctx.probe_path(file, line, path, "GET", &k8s);
        }
    }

    // spec.replicas beside an HPA that scales this workload.
    let name = d.value["metadata"]["name"].as_str().unwrap_or_default();
    let kind = d.kind().unwrap_or_default();
    let hpa = docs.iter().find(|h| {
        h.kind() == Some("HorizontalPodAutoscaler")
            && h.value["spec"]["scaleTargetRef"]["kind"].as_str() == Some(kind)
            && h.value["spec"]["scaleTargetRef"]["name"].as_str() == Some(name)
    });
    if let Some(hpa) = hpa
        && let Some(replicas) = d.value["spec"]["replicas"].as_u64()
    {
        ctx.push(
            Finding::warning("k8s-replicas", file, d.line(&[Key("spec"), Key("replicas")]))
                .message(format!(
                    "{kind} {name} sets replicas: {replicas}, and the HPA in {} scales it",
                    hpa.file
                ))
                .platform(
                    "every `kubectl apply` resets the pod count to spec.replicas, undoing what \
                     the HPA scaled to; Kubernetes' HPA documentation says to remove it",
                )
                .source("https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#migrating-deployments-and-statefulsets-to-horizontal-autoscaling")
                .fix("remove spec.replicas; the HPA's minReplicas is the floor"),
        );
    }
}
