//! The release step: `SERVICE migrate`, run once per deploy by each
//! platform's release phase, before any instance gets the new build.
//!
//! Read from heroku.yml (`release:`), the Procfile (`release:`), fly.toml
//! (`[deploy] release_command`), render.yaml (`preDeployCommand`),
//! `.railway/railway.ts` (`preDeployCommand`), a Kubernetes `Job` in
//! `deploy/kubernetes/`, a Cloud Run job in `deploy/cloudrun/`, and a
//! Compose service that runs `migrate`.
//!
//! Checks:
//! - `release-step` (error): the service has migrations (`migrations/*.sql`,
//!   the folder `sqlx::migrate!()` embeds) and a platform it deploys to has
//!   no release step, so the new build would serve against the old schema;
//!   or a Compose service runs the service without waiting for `migrate`
//!   to complete (one that sets `DATABASE_URL`).
//! - `release-command` (error): a release step that does not run the
//!   service's own binary with `migrate`.
//! - `release-direct-url` (error): a manifest points `DATABASE_URL` at a
//!   connection pooler (PgBouncer's port 6432, or a host named for one)
//!   and gives no `DATABASE_DIRECT_URL`: `migrate`'s session advisory lock
//!   does not hold through a transaction-mode pooler.

use serde_norway::Value as Yaml;

use super::locate::{Index, Key, toml_line, yaml_line};
use super::{Ctx, Finding, basename, yaml_documents, yaml_scalar};

/// Why the web process never migrates: one place, quoted by every finding.
const WHY: &str = "the platform starts the new build only after its release step has succeeded; \
                   without one, the new code serves against the old schema";

/// How a manifest gives the command.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// A command line of its own (heroku.yml, Procfile, Fly, Render,
    /// Railway): it must name the binary.
    Line,
    /// Arguments to the image's ENTRYPOINT (Kubernetes and Cloud Run
    /// `args`, Compose `command`): `migrate` alone is enough.
    Args,
}

/// Whether `words` run the service's migrations. `Err` says what they
/// run instead.
fn migrates(binary: &str, words: &[String], form: Form) -> Result<(), String> {
    match words {
        [sub] if form == Form::Args && sub == "migrate" => Ok(()),
        [program, sub] if basename(program) == binary && sub == "migrate" => Ok(()),
        [] => Err("runs nothing".into()),
        other => Err(format!(
            "runs `{}`, not the service's `{binary} migrate`",
            other.join(" ")
        )),
    }
}

/// Whether a PostgreSQL URL goes through a connection pooler.
fn pooled(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    parsed.port() == Some(6432)
        || host.contains("pooler")
        || host.contains("pgbouncer")
        || parsed
            .query_pairs()
            .any(|(k, v)| k == "pgbouncer" && v == "true")
}

/// The state of the check: what the service has, and the fix every
/// finding gives.
struct Release {
    migrations: bool,
    binary: String,
}

impl Release {
    fn fix_line(&self) -> String {
        format!("/usr/local/bin/{} migrate", self.binary)
    }

    /// `release-command` for `words` in `file:line`, when they are wrong.
    fn command(
        &self,
        ctx: &mut Ctx<'_>,
        file: &str,
        line: Option<usize>,
        words: &[String],
        form: Form,
        (platform, source): (&str, &str),
    ) {
        if let Err(problem) = migrates(&self.binary, words, form) {
            let fix = match form {
                Form::Line => self.fix_line(),
                Form::Args => "args: [\"migrate\"]".to_owned(),
            };
            ctx.push(
                Finding::error("release-command", file, line)
                    .message(format!("the release step {problem}"))
                    .platform(format!("{platform}; {WHY}"))
                    .source(source)
                    .fix(fix),
            );
        }
    }

    /// `release-step` for a platform whose manifest is there but runs no
    /// release step.
    fn missing(&self, ctx: &mut Ctx<'_>, file: &str, platform: &str, source: &str, fix: String) {
        if self.migrations {
            ctx.push(
                Finding::error("release-step", file, None)
                    .message(format!(
                        "the service has migrations (migrations/), but {file} runs no release step"
                    ))
                    .platform(format!("{platform}; {WHY}"))
                    .source(source)
                    .fix(fix),
            );
        }
    }

    /// `release-direct-url` when `vars` point DATABASE_URL at a pooler.
    fn direct_url(&self, ctx: &mut Ctx<'_>, file: &str, vars: &[super::Var]) {
        let Some(url) = super::var(vars, "DATABASE_URL") else {
            return;
        };
        if pooled(&url.value) && super::var(vars, "DATABASE_DIRECT_URL").is_none() {
            ctx.push(
                Finding::error("release-direct-url", file, Some(url.line))
                    .message(
                        "DATABASE_URL goes through a connection pooler and no \
                         DATABASE_DIRECT_URL is set",
                    )
                    .platform(
                        "in transaction mode PgBouncer hands each transaction any server \
                         connection, so migrate's session advisory lock is not held and two \
                         releases can migrate at once",
                    )
                    .source("https://www.pgbouncer.org/features.html")
                    .fix("set DATABASE_DIRECT_URL to the database's own (unpooled) URL"),
            );
        }
    }
}

/// Checks every platform's release step.
pub(crate) fn check(ctx: &mut Ctx<'_>) {
    let migrations = std::fs::read_dir(ctx.dir().join("migrations"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        })
        .unwrap_or(false);
    let release = Release {
        migrations,
        binary: ctx.binary.to_owned(),
    };
    heroku(ctx, &release);
    procfile(ctx, &release);
    fly(ctx, &release);
    render(ctx, &release);
    railway(ctx, &release);
    kubernetes(ctx, &release);
    cloudrun(ctx, &release);
    compose(ctx, &release);
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

const HEROKU: &str = "https://devcenter.heroku.com/articles/release-phase";

fn heroku(ctx: &mut Ctx<'_>, r: &Release) {
    const FILE: &str = "heroku.yml";
    let Some(text) = ctx.read(FILE) else { return };
    let Ok(doc) = serde_norway::from_str::<Yaml>(&text) else {
        return; // heroku::check reports it
    };
    let platform = "Heroku runs heroku.yml's `release:` command in a one-off dyno of the new image";
    // `command:` is a list (changelog item 1390) or, leniently, a string.
    let command = match &doc["release"]["command"] {
        Yaml::Sequence(items) => items.first().and_then(yaml_scalar),
        other => yaml_scalar(other),
    };
    match command {
        Some(command) => {
            let line = yaml_line(&text, 0, &[Key("release"), Key("command")]);
            r.command(
                ctx,
                FILE,
                line,
                &words(&command),
                Form::Line,
                (platform, HEROKU),
            );
        }
        None => r.missing(
            ctx,
            FILE,
            platform,
            HEROKU,
            format!("release:\n  image: web\n  command:\n    - {}", r.fix_line()),
        ),
    }
}

fn procfile(ctx: &mut Ctx<'_>, r: &Release) {
    const FILE: &str = "Procfile";
    let Some(text) = ctx.read(FILE) else { return };
    let platform = "Heroku and the Procfile runners run `release:` before the new `web:`";
    let release = text
        .lines()
        .enumerate()
        .find_map(|(n, l)| l.trim().strip_prefix("release:").map(|c| (n + 1, c)));
    match release {
        Some((line, command)) => r.command(
            ctx,
            FILE,
            Some(line),
            &words(command),
            Form::Line,
            (platform, HEROKU),
        ),
        None => r.missing(
            ctx,
            FILE,
            platform,
            HEROKU,
            format!("release: {}", r.binary_line()),
        ),
    }
}

impl Release {
    /// The Procfile's spelling: the binary on PATH.
    fn binary_line(&self) -> String {
        format!("{} migrate", self.binary)
    }
}

fn fly(ctx: &mut Ctx<'_>, r: &Release) {
    const FILE: &str = "fly.toml";
    const SOURCE: &str = "https://fly.io/docs/reference/configuration/";
    let Some(text) = ctx.read(FILE) else { return };
    let Ok(doc) = text.parse::<toml::Table>() else {
        return; // fly::check reports it
    };
    let platform = "Fly runs [deploy] release_command in a temporary Machine of the new image";
    match doc
        .get("deploy")
        .and_then(|d| d.get("release_command"))
        .and_then(|c| c.as_str())
    {
        Some(command) => {
            let line = toml_line(&text, &[Key("deploy"), Key("release_command")]);
            r.command(
                ctx,
                FILE,
                line,
                &words(command),
                Form::Line,
                (platform, SOURCE),
            );
        }
        None => r.missing(
            ctx,
            FILE,
            platform,
            SOURCE,
            format!("[deploy]\n  release_command = \"{}\"", r.fix_line()),
        ),
    }
    let env: Vec<super::Var> = doc
        .get("env")
        .and_then(|e| e.as_table())
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let line = toml_line(&text, &[Key("env"), Key(k)]);
            Some(super::Var::new(k, v.as_str()?, line))
        })
        .collect();
    r.direct_url(ctx, FILE, &env);
}

fn render(ctx: &mut Ctx<'_>, r: &Release) {
    const FILE: &str = "render.yaml";
    const SOURCE: &str = "https://render.com/docs/blueprint-spec";
    let Some(text) = ctx.read(FILE) else { return };
    let Ok(doc) = serde_norway::from_str::<Yaml>(&text) else {
        return;
    };
    let platform = "Render runs preDeployCommand in the new image before traffic switches (paid \
                    instance types only)";
    for (i, s) in doc["services"]
        .as_sequence()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if s["type"].as_str() != Some("web") {
            continue;
        }
        match yaml_scalar(&s["preDeployCommand"]) {
            Some(command) => {
                let line = yaml_line(
                    &text,
                    0,
                    &[Key("services"), Index(i), Key("preDeployCommand")],
                );
                r.command(
                    ctx,
                    FILE,
                    line,
                    &words(&command),
                    Form::Line,
                    (platform, SOURCE),
                );
            }
            None => r.missing(
                ctx,
                FILE,
                platform,
                SOURCE,
                format!("preDeployCommand: {}", r.fix_line()),
            ),
        }
    }
}

fn railway(ctx: &mut Ctx<'_>, r: &Release) {
    const FILE: &str = ".railway/railway.ts";
    const SOURCE: &str = "https://docs.railway.com/deployments/pre-deploy-command";
    let Some(source) = ctx.read(FILE) else { return };
    let code = super::railway::strip_comments(&source);
    let platform = "Railway runs the pre-deploy command in a container of the new image before \
                    the deployment goes live";
    let found = ["preDeployCommand", "preDeploy"]
        .iter()
        .find_map(|key| super::railway::literal(&code, key));
    match found {
        Some((command, at)) => {
            let line = Some(super::locate::line_of_offset(&code, at));
            let command = command.trim_start_matches('[').trim_end_matches(']');
            let command = command.trim().trim_matches(['"', '\'', '`']);
            r.command(
                ctx,
                FILE,
                line,
                &words(command),
                Form::Line,
                (platform, SOURCE),
            );
        }
        None => r.missing(
            ctx,
            FILE,
            platform,
            SOURCE,
            format!("preDeployCommand: \"{}\"", r.fix_line()),
        ),
    }
}

/// The argv a Kubernetes-shaped container runs: `command` (replacing the
/// ENTRYPOINT) and `args` (replacing the CMD), and which form it is in.
fn container_argv(c: &Yaml) -> (Vec<String>, Form) {
    let list = |v: &Yaml| -> Vec<String> {
        v.as_sequence()
            .into_iter()
            .flatten()
            .filter_map(yaml_scalar)
            .collect()
    };
    let command = list(&c["command"]);
    let args = list(&c["args"]);
    if command.is_empty() {
        (args, Form::Args)
    } else {
        ([command, args].concat(), Form::Line)
    }
}

/// Every document of every YAML file in `dir`, with its file and index.
fn yaml_docs(ctx: &mut Ctx<'_>, dir: &str) -> Vec<(String, String, usize, Yaml)> {
    let mut out = Vec::new();
    for file in super::yaml_files(ctx, dir) {
        let Some(text) = ctx.read(&file) else {
            continue;
        };
        let Ok(docs) = yaml_documents(&text) else {
            continue;
        };
        for (i, doc) in docs.into_iter().filter(|d| !d.is_null()).enumerate() {
            out.push((file.clone(), text.clone(), i, doc));
        }
    }
    out
}

/// The Jobs among `docs`, checked; whether there is a workload to migrate
/// for, and whether a Job migrates.
fn jobs(
    ctx: &mut Ctx<'_>,
    r: &Release,
    docs: &[(String, String, usize, Yaml)],
    workload: &[&str],
    job_path: &[&str],
    (platform, source): (&str, &str),
) -> (Option<String>, bool) {
    let mut served_by = None;
    let mut migrated = false;
    for (file, text, index, doc) in docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if workload.contains(&kind) {
            served_by.get_or_insert_with(|| file.clone());
        }
        if kind != "Job" {
            continue;
        }
        let mut spec = doc;
        for key in job_path {
            spec = &spec[*key];
        }
        for (i, c) in spec["containers"]
            .as_sequence()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let (argv, form) = container_argv(c);
            if !argv.iter().any(|w| w == "migrate") && argv.iter().all(|w| basename(w) != r.binary)
            {
                continue; // a Job of something else
            }
            migrated = true;
            let mut path: Vec<super::locate::Seg<'_>> = job_path.iter().map(|k| Key(k)).collect();
            path.extend([Key("containers"), Index(i)]);
            let line = yaml_line(text, *index, &path);
            r.command(ctx, file, line, &argv, form, (platform, source));
            let env = super::container_env(c, |_| line);
            r.direct_url(ctx, file, &env);
        }
    }
    (served_by, migrated)
}

fn kubernetes(ctx: &mut Ctx<'_>, r: &Release) {
    const SOURCE: &str = "https://kubernetes.io/docs/concepts/workloads/controllers/job/";
    let docs = yaml_docs(ctx, "deploy/kubernetes");
    let platform = "Kubernetes has no release phase: a Job of the same image must complete \
                    before the Deployment rolls out";
    let (served, migrated) = jobs(
        ctx,
        r,
        &docs,
        &["Deployment", "StatefulSet"],
        &["spec", "template", "spec"],
        (platform, SOURCE),
    );
    if let Some(file) = served
        && !migrated
    {
        r.missing(
            ctx,
            &file,
            platform,
            SOURCE,
            "add a Job (deploy/kubernetes/migrate-job.yaml) whose container has \
             `args: [\"migrate\"]`, run with `kubectl replace --force` before `kubectl apply`"
                .to_owned(),
        );
    }
}

fn cloudrun(ctx: &mut Ctx<'_>, r: &Release) {
    const SOURCE: &str = "https://cloud.google.com/sdk/gcloud/reference/run/jobs/execute";
    let docs = yaml_docs(ctx, "deploy/cloudrun");
    let platform = "Cloud Run has no release hook: a Cloud Run job of the same image must \
                    complete (`gcloud run jobs execute --wait`) before the service is deployed";
    let (served, migrated) = jobs(
        ctx,
        r,
        &docs,
        &["Service"],
        &["spec", "template", "spec", "template", "spec"],
        (platform, SOURCE),
    );
    if let Some(file) = served
        && !migrated
    {
        r.missing(
            ctx,
            &file,
            platform,
            SOURCE,
            "add a Cloud Run job (deploy/cloudrun/migrate-job.yaml) whose container has \
             `args: [\"migrate\"]`"
                .to_owned(),
        );
    }
}

fn compose(ctx: &mut Ctx<'_>, r: &Release) {
    const SOURCE: &str = "https://docs.docker.com/reference/compose-file/services/#depends_on";
    let Some(file) = super::compose::FILES.into_iter().find(|f| ctx.exists(f)) else {
        return;
    };
    let Some(text) = ctx.read(file) else { return };
    let Ok(doc) = serde_norway::from_str::<Yaml>(&text) else {
        return;
    };
    let Some(services) = doc["services"].as_mapping() else {
        return;
    };
    let platform = "Compose starts a service once what it depends on has reached its condition";
    let mut migrators = Vec::new();
    let mut servers = Vec::new();
    for (name, s) in services {
        let Some(name) = yaml_scalar(name) else {
            continue;
        };
        if !super::compose::runs_ours(&doc, ctx.binary, s) {
            continue;
        }
        if super::compose::is_release_step(s) {
            let argv: Vec<String> = match &s["command"] {
                Yaml::Sequence(items) => items.iter().filter_map(yaml_scalar).collect(),
                other => yaml_scalar(other).map(|c| words(&c)).unwrap_or_default(),
            };
            let line = yaml_line(&text, 0, &[Key("services"), Key(&name), Key("command")]);
            r.command(ctx, file, line, &argv, Form::Args, (platform, SOURCE));
            let env = super::compose::environment(&text, &name, s);
            r.direct_url(ctx, file, &env);
            migrators.push(name);
        } else {
            servers.push((name, s.clone()));
        }
    }
    if migrators.is_empty() {
        if !servers.is_empty() {
            r.missing(
                ctx,
                file,
                platform,
                SOURCE,
                "add a one-shot `migrate` service of the same image (`command: [\"migrate\"]`) \
                 and make the others depend on it with `condition: \
                 service_completed_successfully`"
                    .to_owned(),
            );
        }
        return;
    }
    for (name, s) in servers {
        // A service of the same image without a database (the article's
        // `auth`) has nothing to wait for.
        let env = super::compose::environment(&text, &name, &s);
        if super::var(&env, "DATABASE_URL").is_none() {
            continue;
        }
        let waits = migrators.iter().any(|m| {
            s["depends_on"][m.as_str()]["condition"].as_str()
                == Some("service_completed_successfully")
        });
        if !waits {
            let line = yaml_line(&text, 0, &[Key("services"), Key(&name)]);
            ctx.push(
                Finding::error("release-step", file, line)
                    .message(format!(
                        "{name} does not wait for {} to complete",
                        migrators.join(", ")
                    ))
                    .platform(format!(
                        "{platform}; without `service_completed_successfully` {name} starts \
                         beside the migrations, or after they failed"
                    ))
                    .source(SOURCE)
                    .fix(format!(
                        "depends_on:\n  {}:\n    condition: service_completed_successfully",
                        migrators[0]
                    )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str) -> Vec<String> {
        words(text)
    }

    #[test]
    fn a_release_step_runs_the_binary_with_migrate() {
        assert!(migrates("svc", &w("/usr/local/bin/svc migrate"), Form::Line).is_ok());
        assert!(migrates("svc", &w("svc migrate"), Form::Line).is_ok());
        assert!(migrates("svc", &w("migrate"), Form::Args).is_ok());
        assert!(migrates("svc", &w("migrate"), Form::Line).is_err());
        assert!(migrates("svc", &w("/usr/local/bin/other migrate"), Form::Line).is_err());
        assert!(migrates("svc", &w("/usr/local/bin/svc serve"), Form::Line).is_err());
        assert!(migrates("svc", &[], Form::Args).is_err());
    }

    #[test]
    fn pooler_urls_are_recognised() {
        assert!(pooled("postgres://u:p@db.internal:6432/app"));
        assert!(pooled("postgres://u:p@pgbouncer.x.flympg.net/app"));
        assert!(pooled("postgres://u:p@abc-pooler.render.com/app"));
        assert!(pooled("postgres://u:p@db/app?pgbouncer=true"));
        assert!(!pooled("postgres://u:p@db:5432/app"));
        assert!(!pooled("not a url"));
    }
}
