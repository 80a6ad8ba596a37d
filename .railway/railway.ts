// Railway: Infrastructure as Code, read by `railway config plan` (shows the
// change) and `railway config apply` (makes it); Railway CLI 5.42.1 or later.
//
// This file replaces railway.json. Railway deprecated Config as Code
// (railway.json / railway.toml): new services cannot opt in, and existing
// files stopped being read on 2026-12-01.
//   https://docs.railway.com/infrastructure-as-code
//   https://docs.railway.com/infrastructure-as-code/reference
// The types come from the npm package `railway` (3.11.0, entry point
// `railway/iac`); `doctor` reads its draining variable, and portbound's
// tests/railway/ type-checks and evaluates it.
import { defineRailway, project, service } from "railway/iac";

export default defineRailway(() => {
  const web = service("portbound", {
    // No `source`: the file manages the service's settings, and the code
    // comes from whatever the service is linked to (the repository in the
    // dashboard, or `railway up`).

    // The same image as every other container platform. Railway would pick
    // the Dockerfile anyway; saying so keeps a dashboard setting from
    // switching the builder underneath.
    build: { builder: "DOCKERFILE", dockerfilePath: "Dockerfile" },

    // Railway polls this path only while a deployment goes live, and moves
    // traffic to it on the first 200. "May this deployment take traffic?" is
    // a readiness question, so it is asked of /readyz, which also checks
    // every backing service: if one is unreachable the new deployment does
    // not go live and the old one keeps serving.
    healthcheck: "/readyz",
    // Seconds. The binary listens within milliseconds; the rest is margin
    // for an image pull or a backing service deploying at the same time.
    // Equal to Heroku's boot deadline, so a broken start fails in the same
    // time everywhere (Railway's default is 300).
    healthcheckTimeout: 60,

    // The release phase: a separate container of the new image runs this
    // before the deployment goes live; a non-zero exit stops it, and it is
    // not retried. It gets the service's variables and private network, no
    // volumes. The IaC types compile it to deploy.preDeployCommand
    // (npm `railway` 3.11.0, `service()` options);
    // railwayapp/docs `deployments/pre-deploy-command.md` (the behaviour).
    preDeployCommand: "/usr/local/bin/portbound migrate",

    // Restart after a crash, not after a clean exit on SIGTERM; five crashes
    // in a row are a configuration problem that restarts will not fix. The
    // restart policy has no shorthand in the IaC types, so it goes through
    // the service's raw deploy settings.
    deploy: { restartPolicyType: "ON_FAILURE", restartPolicyMaxRetries: 5 },

    variables: {
      // Seconds between SIGTERM and SIGKILL. Railway's default is 0: SIGKILL
      // right after SIGTERM, and no request can finish. It is a variable the
      // service sets ("user-provided configuration" in
      // https://docs.railway.com/reference/variables), not one Railway
      // injects, so this file must set it. The app reads it and drains for
      // 5 s less (25 s); without it the app warns at start.
      RAILWAY_DEPLOYMENT_DRAINING_SECONDS: "30",
    },
  });

  return project("portbound", { resources: [web] });
});
