// Node-RED settings for the Wisp benchmark: headless (no editor, no admin API, no HTTP
// nodes), loopback only, quiet. scripts/bench.sh sets BENCH_NR_PORT (a free loopback port
// Node-RED insists on listening on), BENCH_NR_USERDIR and BENCH_BROKER_PORT (used by the flow).
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.BENCH_NR_PORT || "1880", 10),
    userDir: process.env.BENCH_NR_USERDIR,
    flowFile: "flows.json",
    flowFilePretty: false,
    credentialSecret: false,
    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    diagnostics: { enabled: false },
    runtimeState: { enabled: false },
    telemetry: { enabled: false },
    logging: { console: { level: "warn", metrics: false, audit: false } },
    exportGlobalContextKeys: false,
    functionExternalModules: false,
    functionTimeout: 0,
};
