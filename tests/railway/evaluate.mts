// Runs .railway/railway.ts the way the Railway CLI does (a program given a
// context and the project constructor) and prints the resources it defines,
// as JSON, for tests/platforms.rs to check against the app.
import program from "./.railway/railway.ts";
import { createRailwayContext, project } from "railway/iac";

const defined = await program(createRailwayContext({ environment: "production" }), project);
process.stdout.write(JSON.stringify(defined));
