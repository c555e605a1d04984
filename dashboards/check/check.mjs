// Checks the gateway's Grafana dashboards without a Grafana server:
//  1. type-checks each dashboard JSON against Grafana's own dashboard types (@grafana/schema,
//     pinned in package.json) with `tsc --noEmit --strict`: each file is wrapped as a typed
//     constant, so unknown keys, wrong types and bad enum values fail; each panel's `options`
//     and `fieldConfig.defaults.custom` are checked against its panel plugin's types;
//  2. lints them with rules in the spirit of Grafana's dashboard-linter.
// Usage: node check.mjs [DIR]  (DIR defaults to the dashboards/ folder this script lives in).
// Exits 1 and prints one line per problem, naming the file.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = path.resolve(process.argv[2] ?? path.join(here, '..'));
const files = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort();
const problems = [];
const problem = (file, msg) => problems.push(`${file}: ${msg}`);

// Panel plugins whose option types @grafana/schema ships, and the module holding them.
const plugins = {
  timeseries: ['TimeSeries', 'timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen', true],
  stat: ['Stat', 'stat/panelcfg/x/StatPanelCfg_types.gen', false],
  table: ['Table', 'table/panelcfg/x/TablePanelCfg_types.gen', true],
  bargauge: ['BarGauge', 'bargauge/panelcfg/x/BarGaugePanelCfg_types.gen', false],
};

const dashboards = [];
for (const file of files) {
  const text = fs.readFileSync(path.join(dir, file), 'utf8');
  try {
    dashboards.push({ file, text, json: JSON.parse(text) });
  } catch (e) {
    problem(file, `not JSON: ${e.message}`);
  }
}
if (files.length === 0) problem(dir, 'no dashboards found');

// ---- 1. Types.
const build = fs.mkdtempSync(path.join(here, 'build-'));
try {
  const header = (imports) =>
    [
      "import type { GatewayDashboard, Json } from '../types';",
      ...imports,
      '// prettier-ignore',
      'export const dashboard: Json<GatewayDashboard> = ',
    ].join('\n') + '\n';
  const origins = new Map();
  for (const d of dashboards) {
    const stem = path.basename(d.file, '.json');
    const imports = Object.entries(plugins).map(
      ([, [name, mod]]) =>
        `import type { Options as ${name}Options, ${name === 'Stat' || name === 'BarGauge' ? '' : `FieldConfig as ${name}FieldConfig, `}} from '@grafana/schema/dist/esm/raw/composable/${mod}';`,
    );
    const head = header(imports);
    let body = head + d.text.trimEnd() + ';\n';
    const extra = [];
    for (const p of allPanels(d.json)) {
      const plugin = plugins[p.type];
      if (!plugin) continue;
      const [name, , hasCustom] = plugin;
      extra.push({ line: countLines(body) + extra.length + 1, what: `panel ${p.id} "${p.title}" options` });
      body += `export const panel${p.id}Options: Json<${name}Options> = ${JSON.stringify(p.options ?? {})};\n`;
      const custom = p.fieldConfig?.defaults?.custom;
      if (hasCustom && custom !== undefined) {
        body += `export const panel${p.id}Custom: Json<${name}FieldConfig> = ${JSON.stringify(custom)};\n`;
      }
    }
    // Recompute the extra lines exactly: one constant per line after the dashboard.
    const lines = body.split('\n');
    const map = [];
    lines.forEach((l, i) => {
      const m = /^export const panel(\d+)(Options|Custom)/.exec(l);
      if (m) map[i + 1] = `panel ${m[1]} ${m[2] === 'Options' ? 'options' : 'fieldConfig.defaults.custom'}`;
    });
    origins.set(`${stem}.ts`, { file: d.file, offset: countLines(head), map });
    fs.writeFileSync(path.join(build, `${stem}.ts`), body);
  }
  fs.writeFileSync(
    path.join(build, 'tsconfig.json'),
    JSON.stringify({ extends: '../tsconfig.json', include: ['../types.ts', '*.ts'] }),
  );
  if (dashboards.length) {
    try {
      execFileSync(process.execPath, [path.join(here, 'node_modules/typescript/bin/tsc'), '-p', build, '--pretty', 'false'], {
        encoding: 'utf8',
        stdio: 'pipe',
      });
    } catch (e) {
      const out = `${e.stdout ?? ''}${e.stderr ?? ''}`;
      let any = false;
      for (const line of out.split('\n')) {
        const m = /([^/\\]+\.ts)\((\d+),(\d+)\): error (TS\d+): (.*)/.exec(line);
        if (!m) continue;
        const o = origins.get(m[1]);
        if (!o) {
          problems.push(line);
          continue;
        }
        const n = Number(m[2]);
        const where = o.map[n] ?? `line ${n - o.offset}, column ${m[3]}`;
        problem(o.file, `${where}: ${m[5]} (${m[4]})`);
        any = true;
      }
      if (!any) problems.push(`tsc failed: ${out.trim() || e.message}`);
    }
  }
} finally {
  fs.rmSync(build, { recursive: true, force: true });
}

// ---- 2. Lint.
const uids = new Map();
for (const { file, json: d } of dashboards) {
  if (typeof d.uid !== 'string' || !/^[a-z0-9-]{8,40}$/.test(d.uid)) problem(file, `uid ${JSON.stringify(d.uid)} is not a stable 8-40 character slug`);
  else if (uids.has(d.uid)) problem(file, `uid ${d.uid} is also used by ${uids.get(d.uid)}`);
  else uids.set(d.uid, file);
  if (!d.title) problem(file, 'the dashboard has no title');
  if (!Number.isInteger(d.schemaVersion) || d.schemaVersion < 41) problem(file, `schemaVersion ${d.schemaVersion} is not current (41 or later)`);
  const vars = d.templating?.list ?? [];
  const ds = vars.find((v) => v.type === 'datasource');
  if (!ds || ds.name !== 'datasource' || ds.query !== 'prometheus') problem(file, 'no `datasource` template variable of type datasource for prometheus');
  for (const name of ['instance', 'route']) {
    if (!vars.some((v) => v.name === name && v.type === 'query')) problem(file, `no \`${name}\` template variable`);
  }
  for (const v of vars.filter((v) => v.type === 'query')) {
    if (!templated(v.datasource)) problem(file, `variable ${v.name} does not use the templated data source`);
  }
  const ids = new Set();
  for (const p of allPanels(d, true)) {
    const at = `panel ${p.id} "${p.title ?? ''}"`;
    if (!Number.isInteger(p.id)) problem(file, `${at}: no numeric id`);
    else if (ids.has(p.id)) problem(file, `${at}: duplicate panel id ${p.id}`);
    ids.add(p.id);
    const g = p.gridPos;
    if (!g || g.x + g.w > 24 || g.w < 1 || g.h < 1) problem(file, `${at}: gridPos missing or wider than the 24-column grid`);
    if (p.type === 'row') continue;
    if (!p.title) problem(file, `${at}: no title`);
    if (!p.description) problem(file, `${at}: no description`);
    if (!p.fieldConfig?.defaults?.unit) problem(file, `${at}: no unit (fieldConfig.defaults.unit)`);
    if (!templated(p.datasource)) problem(file, `${at}: the panel's data source is not \${datasource}`);
    const targets = p.targets ?? [];
    if (targets.length === 0) problem(file, `${at}: no target`);
    const refs = new Set();
    for (const t of targets) {
      if (refs.has(t.refId)) problem(file, `${at}: duplicate refId ${t.refId}`);
      refs.add(t.refId);
      if (!templated(t.datasource)) problem(file, `${at} target ${t.refId}: the data source is not \${datasource}`);
      for (const msg of lintExpr(t.expr ?? '')) problem(file, `${at} target ${t.refId}: ${msg}`);
    }
  }
  for (const a of d.annotations?.list ?? []) {
    if (a.builtIn) continue;
    if (!templated(a.datasource)) problem(file, `annotation "${a.name}": the data source is not \${datasource}`);
    for (const msg of lintExpr(a.target?.expr ?? '')) problem(file, `annotation "${a.name}": ${msg}`);
  }
}

if (problems.length) {
  for (const p of problems) console.error(p);
  console.error(`${problems.length} problem(s) in ${files.length} dashboard(s)`);
  process.exit(1);
}
console.log(`${files.length} dashboards: types and lint clean`);

function countLines(s) {
  return s.split('\n').length - 1;
}

function allPanels(d, withRows = false) {
  const out = [];
  for (const p of d.panels ?? []) {
    if (p.type === 'row') {
      if (withRows) out.push(p);
      out.push(...(p.panels ?? []));
    } else out.push(p);
  }
  return out;
}

function templated(ref) {
  return ref && (ref.uid === '${datasource}' || ref.uid === '$datasource');
}

// Rules on one PromQL expression.
function lintExpr(expr) {
  const out = [];
  if (!expr.trim()) return ['no expr'];
  const metric = /(?<![\w:])((?:gateway|process)_[a-z0-9_]+)/g;
  for (const m of expr.matchAll(metric)) {
    const name = m[1];
    const counter = /_(total|bucket|count|sum)$/.test(name);
    const fn = enclosingFunction(expr, m.index);
    if (counter && !['rate', 'irate', 'increase'].includes(fn)) {
      out.push(`the counter ${name} is read outside rate() or increase()`);
    }
    const sel = /^\{[^}]*\}/.exec(expr.slice(m.index + name.length));
    if (!sel || !/instance=~"\$instance"/.test(sel[0])) out.push(`${name} is not filtered by instance=~"$instance"`);
  }
  for (const m of expr.matchAll(/\b(rate|irate|increase)\s*\(/g)) {
    const close = matching(expr, m.index + m[0].length - 1);
    const inner = expr.slice(m.index, close);
    const range = /\[([^\]]+)\]\s*$/.exec(inner);
    const ok = m[1] === 'increase' ? ['$__rate_interval', '$__range', '1m'] : ['$__rate_interval'];
    if (!range || !ok.includes(range[1])) out.push(`${m[1]}() over [${range?.[1] ?? '?'}]: use [$__rate_interval]`);
  }
  return out;
}

function matching(s, open) {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    if (s[i] === '(') depth++;
    else if (s[i] === ')' && --depth === 0) return i;
  }
  return s.length;
}

// The name of the innermost function call around position `at` (aggregations by/without
// clauses are skipped over), or '' at the top level.
function enclosingFunction(s, at) {
  let depth = 0;
  for (let i = at - 1; i >= 0; i--) {
    if (s[i] === ')') depth++;
    else if (s[i] === '(') {
      if (depth > 0) {
        depth--;
        continue;
      }
      const name = /([a-z_]+)\s*$/.exec(s.slice(0, i));
      return name ? name[1] : '';
    }
  }
  return '';
}
