//! Medians over the repetitions, ratios ours/ngircd (and ours-irc/ngircd
//! and ours-irc/inspircd: our IRC door on the IRC servers' own workload) and
//! ours/floor, the targets of issues 6, 11 and 14, Markdown tables and an
//! SVG chart.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde_json::{Value, json};

use crate::scenarios::FloodCase;

/// Every server a run may measure, in the order of the table and the chart:
/// ours through the browser door (`ours-ws`: the same server, WebSocket
/// clients) is compared with ours.
const MEASURED: [&str; 6] = ["floor", "ours", "ours-irc", "ours-ws", "ngircd", "inspircd"];

/// The figures shown per scenario, in order, with their unit.
fn metrics(scenario: &str) -> &'static [(&'static str, &'static str)] {
    match scenario {
        "fanout" => &[
            ("deliveries_per_s", "deliveries/s"),
            ("p50_ms", "p50 latency, ms"),
            ("p99_ms", "p99 latency, ms"),
            ("max_ms", "max latency, ms"),
            ("lost", "lost messages"),
            ("cpu_ms_per_1000", "server CPU ms / 1000 deliveries"),
            ("gen_cpu_util", "generator CPU share"),
        ],
        "connections" => &[
            ("rss_per_conn_bytes", "server RSS / connection, bytes"),
            (
                "rss_settled_per_conn_bytes",
                "server RSS / connection after 11 s idle, bytes",
            ),
            ("broadcast_ms", "one broadcast reaches all, ms"),
            (
                "bcast_cpu_ms_per_1000",
                "server CPU ms / 1000 deliveries, broadcasts",
            ),
            ("setup_s", "connect + log in (+ join) all, s"),
            (
                "setup_cpu_s",
                "server CPU to connect + log in (+ join) all, s",
            ),
            ("ready", "clients in at the end"),
            ("join_lines", "JOIN lines the clients read"),
        ],
        "storm" => &[
            ("rtt_p99_before_ms", "chat RTT p99 before, ms"),
            ("rtt_p99_during_ms", "chat RTT p99 during, ms"),
            ("rtt_max_during_ms", "chat RTT max during, ms"),
            ("logins_per_s", "logins/s"),
            ("rss_start_mib", "server RSS at start, MiB"),
            ("rss_after_mib", "server RSS after the storm, MiB"),
            ("auth_threads", "hashing threads (ours' default)"),
        ],
        s if s.starts_with("tls-") => crate::tls::metrics(s),
        _ => &[],
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One row of the summary: a scenario, a case, a metric, the medians.
pub struct Row {
    pub scenario: String,
    pub case: String,
    pub metric: &'static str,
    pub label: &'static str,
    pub values: BTreeMap<&'static str, f64>,
    pub reps: usize,
    /// Servers that did not get every client in within the connections
    /// scenario's bound in some repetition: their figures are what they
    /// reached, not comparable, so no ratio is taken with them.
    pub partial: Vec<&'static str>,
}

impl Row {
    fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        if self.partial.iter().any(|p| *p == a || *p == b) {
            return None;
        }
        let (x, y) = (self.values.get(a)?, self.values.get(b)?);
        (*y != 0.0).then(|| x / y)
    }

    /// A value for the table: a server that stopped short shows its time
    /// and CPU as lower bounds.
    fn show(&self, server: &str) -> String {
        let v = self.values.get(server).copied();
        let partial = self.partial.contains(&server);
        if partial && v.is_some() && matches!(self.metric, "setup_s" | "setup_cpu_s") {
            format!("> {} (stopped)", fmt(v))
        } else if partial && v.is_some() {
            format!("{} (stopped)", fmt(v))
        } else {
            fmt(v)
        }
    }
}

/// What a connections case that stopped short (the time bound, a client
/// refused) still says: how long, how much CPU, how many got in.
const PARTIAL_METRICS: [&str; 4] = ["setup_s", "setup_cpu_s", "ready", "join_lines"];

fn stopped_short(r: &Value) -> bool {
    r["scenario"] == "connections" && r["completed"] == false
}

pub fn summarize(records: &[Value]) -> Vec<Row> {
    // Cases in the order they first appear.
    let mut cases: Vec<(String, String)> = Vec::new();
    for r in records {
        let key = (
            r["scenario"].as_str().unwrap_or_default().to_string(),
            r["case"].as_str().unwrap_or_default().to_string(),
        );
        if !cases.contains(&key) {
            cases.push(key);
        }
    }
    let mut rows = Vec::new();
    for (scenario, case) in cases {
        for &(metric, label) in metrics(&scenario) {
            let mut values = BTreeMap::new();
            let mut reps = 0;
            let mut partial = Vec::new();
            for server in MEASURED {
                let mine: Vec<&Value> = records
                    .iter()
                    .filter(|r| {
                        r["scenario"] == scenario.as_str()
                            && r["case"] == case.as_str()
                            && r["server"] == server
                    })
                    .collect();
                if mine.iter().any(|r| stopped_short(r)) {
                    partial.push(server);
                }
                let samples: Vec<f64> = mine
                    .iter()
                    .filter(|r| !stopped_short(r) || PARTIAL_METRICS.contains(&metric))
                    .filter_map(|r| r[metric].as_f64())
                    .collect();
                reps = reps.max(samples.len());
                if let Some(m) = median(samples) {
                    values.insert(server, m);
                }
            }
            // A figure no server has for this case (a case that is one
            // figure, such as tls-fanout's sealing alone) is no row.
            if values.is_empty() && partial.is_empty() {
                continue;
            }
            rows.push(Row {
                scenario: scenario.clone(),
                case: case.clone(),
                metric,
                label,
                values,
                reps,
                partial,
            });
        }
    }
    rows
}

/// The flood scenario's figures, in the order of its table.
const FLOOD_METRICS: [(&str, &str); 10] = [
    ("sent", "honest lines sent"),
    ("p50_ms", "honest p50, ms"),
    ("p99_ms", "honest p99, ms"),
    ("max_ms", "honest max, ms"),
    ("disconnected", "honest users disconnected"),
    ("lost", "honest lines lost"),
    ("flood_sent", "flooder's lines written"),
    ("flood_per_user_s", "flooder's lines per honest user per s"),
    ("server_cpu_util", "server CPU share"),
    ("setup_s", "connect + log in all, s"),
];

/// One case of the flood scenario: its medians over the repetitions. Its
/// cases are not servers side by side but settings of one server (and
/// ngircd), so they get a table of their own, one row per case.
pub struct FloodRow {
    pub case: &'static str,
    pub values: BTreeMap<&'static str, f64>,
    pub reps: usize,
}

pub fn flood_rows(records: &[Value]) -> Vec<FloodRow> {
    let mut rows = Vec::new();
    for case in FloodCase::ALL {
        let mine: Vec<&Value> = records
            .iter()
            .filter(|r| r["scenario"] == "flood" && r["case"] == case.name())
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut values = BTreeMap::new();
        for (metric, _) in FLOOD_METRICS {
            if let Some(m) = median(mine.iter().filter_map(|r| r[metric].as_f64()).collect()) {
                values.insert(metric, m);
            }
        }
        rows.push(FloodRow {
            case: case.name(),
            values,
            reps: mine.len(),
        });
    }
    rows
}

fn flood_value(rows: &[FloodRow], case: FloodCase, metric: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.case == case.name())?
        .values
        .get(metric)
        .copied()
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 0.1 => format!("{v:.3}"),
        Some(v) => format!("{v:.4}"),
    }
}

fn find<'a>(rows: &'a [Row], scenario: &str, case: &str, metric: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.case == case && r.metric == metric)
}

/// The targets of issues 6 and 11: (text, measured, met).
pub fn targets(
    rows: &[Row],
    flood: &[FloodRow],
    plan_clients: &[usize],
    conns: usize,
    storm: usize,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut add = |text: String, measured: String, met: Option<bool>| {
        out.push(json!({"target": text, "measured": measured, "met": met}));
    };
    for (ours, theirs) in [
        ("ours", "ngircd"),
        ("ours-irc", "ngircd"),
        ("ours-irc", "inspircd"),
    ] {
        for &c in plan_clients {
            let row = find(rows, "fanout", &format!("C={c} max"), "cpu_ms_per_1000");
            let r = row.and_then(|r| r.ratio(ours, theirs));
            add(
                format!("CPU per delivery at max rate, C={c}: {ours} <= 1/4 of {theirs}"),
                r.map_or("-".into(), |r| format!("{ours}/{theirs} = {r:.3}")),
                r.map(|r| r <= 0.25),
            );
        }
    }
    for &c in plan_clients {
        let row = find(rows, "fanout", &format!("C={c} max"), "cpu_ms_per_1000");
        let r = row.and_then(|r| r.ratio("ours-ws", "ours"));
        add(
            format!("CPU per delivery at max rate, C={c}: WebSocket <= 1.3x plain TCP"),
            r.map_or("-".into(), |r| format!("ours-ws/ours = {r:.3}")),
            r.map(|r| r <= 1.3),
        );
    }
    let row = find(rows, "fanout", "C=1000 100k/s", "p99_ms");
    let (rn, rf) = (
        row.and_then(|r| r.ratio("ours", "ngircd")),
        row.and_then(|r| r.ratio("ours", "floor")),
    );
    add(
        "p99 at C=1000, 100k deliveries/s: below ngircd's, within 1.25x of the floor".into(),
        format!("ours/ngircd = {}, ours/floor = {}", fmt(rn), fmt(rf)),
        rn.zip(rf).map(|(n, f)| n < 1.0 && f <= 1.25),
    );
    let case = format!("N={conns}");
    let row = find(rows, "connections", &case, "rss_per_conn_bytes");
    let v = row.and_then(|r| r.values.get("ours").copied());
    add(
        format!("RSS per logged-in connection at {conns} connections < 1 KiB"),
        v.map_or("-".into(), |v| format!("{v:.0} bytes")),
        v.map(|v| v < 1024.0),
    );
    let v = row.and_then(|r| r.values.get("ours-ws").copied());
    add(
        format!("RSS per idle WebSocket connection at {conns} connections (no goal)"),
        v.map_or("-".into(), |v| format!("{v:.0} bytes")),
        None,
    );
    let row = find(rows, "connections", &case, "broadcast_ms");
    let r = row.and_then(|r| r.ratio("ours", "floor"));
    add(
        format!("one broadcast reaches all {conns} within 1.25x of the floor"),
        r.map_or("-".into(), |r| format!("ours/floor = {r:.3}")),
        r.map(|r| r <= 1.25),
    );
    let row = find(rows, "storm", &format!("S={storm}"), "rtt_p99_during_ms");
    let v = row.and_then(|r| r.values.get("ours").copied());
    add(
        "chat round-trip p99 during the login storm < 10 ms".into(),
        v.map_or("-".into(), |v| format!("{v:.3} ms")),
        v.map(|v| v < 10.0),
    );
    let case = format!("S={storm}");
    let ours = |metric| {
        find(rows, "storm", &case, metric)?
            .values
            .get("ours")
            .copied()
    };
    let (start, after, threads) = (
        ours("rss_start_mib"),
        ours("rss_after_mib"),
        ours("auth_threads"),
    );
    let growth = start.zip(after).map(|(a, b)| b - a);
    add(
        "server RSS after the login storm within auth threads x 19 MiB of the start".into(),
        match (start, after, threads) {
            (Some(a), Some(b), Some(n)) => {
                format!(
                    "{a:.1} -> {b:.1} MiB, +{:.1} MiB; {n:.0} auth thread(s)",
                    b - a
                )
            }
            _ => "-".into(),
        },
        growth.zip(threads).map(|(g, n)| g <= n * 19.0),
    );
    // Issue 12's TLS goals, before the flood goal (which stays last).
    for t in crate::tls::targets(rows, plan_clients, storm) {
        let text = |k: &str| t[k].as_str().unwrap_or_default().to_string();
        add(text("target"), text("measured"), t["met"].as_bool());
    }
    if !flood.is_empty() {
        let on = flood_value(flood, FloodCase::OursOn, "p99_ms");
        let base = flood_value(flood, FloodCase::OursNoFlooder, "p99_ms");
        let gone = flood_value(flood, FloodCase::OursOn, "disconnected");
        let ratio = on.zip(base).and_then(|(a, b)| (b > 0.0).then(|| a / b));
        add(
            "flood: with flood control on, honest p99 within 2x of the no-flooder figure, no honest user disconnected".into(),
            format!(
                "p99 {} ms vs {} ms without a flooder (x{}); {} disconnected",
                fmt(on),
                fmt(base),
                fmt(ratio),
                gone.map_or("-".into(), |g| format!("{g:.0}"))
            ),
            ratio.zip(gone).map(|(r, g)| r <= 2.0 && g == 0.0),
        );
    }
    out
}

/// The flood scenario's table: one row per case, the honest users' figures
/// first, p99 also as a multiple of the no-flooder baseline.
pub fn flood_markdown(rows: &[FloodRow]) -> String {
    let mut s = String::from("| flood case | ");
    for (_, label) in FLOOD_METRICS {
        s.push_str(label);
        s.push_str(" | ");
    }
    s.push_str("p99 / no-flooder p99 |\n|---|");
    s.push_str(&"---:|".repeat(FLOOD_METRICS.len() + 1));
    s.push('\n');
    let base = flood_value(rows, FloodCase::OursNoFlooder, "p99_ms");
    for r in rows {
        s.push_str(&format!("| {} | ", r.case));
        for (metric, _) in FLOOD_METRICS {
            let v = r.values.get(metric).copied();
            // Counts read better whole.
            if matches!(metric, "sent" | "disconnected" | "lost" | "flood_sent") {
                s.push_str(&v.map_or("-".into(), |v| format!("{v:.0}")));
            } else {
                s.push_str(&fmt(v));
            }
            s.push_str(" | ");
        }
        let p99 = r.values.get("p99_ms").copied();
        let ratio = p99.zip(base).and_then(|(a, b)| (b > 0.0).then(|| a / b));
        s.push_str(&fmt(ratio));
        s.push_str(" |\n");
    }
    s
}

pub fn markdown(rows: &[Row], flood: &[FloodRow], targets: &[Value], header: &str) -> String {
    let mut s = String::new();
    s.push_str(header);
    s.push('\n');
    if !rows.is_empty() {
        s.push_str(
            "\n| scenario | case | figure | floor | ours | ours-irc | ngircd | inspircd | ours/ngircd | ours-irc/ngircd | ours-irc/inspircd | ours/floor | ours-ws | ws/ours |\n",
        );
        s.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    }
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.case,
            r.label,
            r.show("floor"),
            r.show("ours"),
            r.show("ours-irc"),
            r.show("ngircd"),
            r.show("inspircd"),
            fmt(r.ratio("ours", "ngircd")),
            fmt(r.ratio("ours-irc", "ngircd")),
            fmt(r.ratio("ours-irc", "inspircd")),
            fmt(r.ratio("ours", "floor")),
            r.show("ours-ws"),
            fmt(r.ratio("ours-ws", "ours")),
        ));
    }
    if !flood.is_empty() {
        s.push('\n');
        s.push_str(&flood_markdown(flood));
    }
    if !targets.is_empty() {
        s.push_str("\n| target | measured | met |\n|---|---|---|\n");
    }
    for t in targets {
        let measured = t["measured"].as_str().unwrap_or_default();
        let met = match t["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            // A figure quoted beside the goals without one of its own.
            None if measured != "-" => "no goal",
            None => "not measured",
        };
        s.push_str(&format!(
            "| {} | {measured} | {met} |\n",
            t["target"].as_str().unwrap_or_default(),
        ));
    }
    s
}

/// One colour per server of [`MEASURED`], in its order.
const COLORS: [RGBColor; 6] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// A panel's bars: for each case, its value per server.
type Bars = Vec<(String, BTreeMap<&'static str, f64>)>;

/// One panel of grouped bars: for each case, one bar per server.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    bars: &[(String, BTreeMap<&'static str, f64>)],
    servers: &[(usize, &str)],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let ymax = bars
        .iter()
        .flat_map(|(_, v)| v.values().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.2;
    let n = bars.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..n, 0f64..ymax)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .x_labels(0)
        .y_labels(6)
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(|e| err(&e))?;
    let width = 0.8 / servers.len().max(1) as f64;
    for (i, (case, values)) in bars.iter().enumerate() {
        for (j, &(color, server)) in servers.iter().enumerate() {
            let Some(&v) = values.get(server) else {
                continue;
            };
            let x0 = i as f64 + 0.1 + j as f64 * width;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, v)],
                    COLORS[color].filled(),
                )))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    fmt(Some(v)),
                    (x0, v + ymax * 0.02),
                    ("sans-serif", 10),
                )))
                .map_err(|e| err(&e))?;
        }
        // Backend coordinates are the whole picture's; the area's are its own.
        let (px, py) = chart.backend_coord(&(i as f64 + 0.3, 0.0));
        let (bx, by) = area.get_base_pixel();
        area.draw(&Text::new(
            case.clone(),
            (px - bx, py - by + 8),
            ("sans-serif", 13),
        ))
        .map_err(|e| err(&e))?;
    }
    Ok(())
}

pub fn chart(rows: &[Row], flood: &[FloodRow], path: &Path, title: &str) -> Result<(), String> {
    let pick = |scenario: &str, metric: &str, case_filter: &dyn Fn(&str) -> bool| {
        rows.iter()
            .filter(|r| r.scenario == scenario && r.metric == metric && case_filter(&r.case))
            .map(|r| (r.case.clone(), r.values.clone()))
            .collect::<Vec<_>>()
    };
    let cpu = pick("fanout", "cpu_ms_per_1000", &|c| c.ends_with("max"));
    let p99 = pick("fanout", "p99_ms", &|c| !c.ends_with("max"));
    let bcast = pick("connections", "broadcast_ms", &|_| true);
    let storm = pick("storm", "rtt_p99_during_ms", &|_| true);
    // The flood cases are settings, not servers: one bar each, in the
    // colour of the server it ran on.
    let flood_bars = |metric: &str| -> Bars {
        flood
            .iter()
            .filter_map(|r| {
                let case = FloodCase::ALL.into_iter().find(|c| c.name() == r.case)?;
                let v = *r.values.get(metric)?;
                let short = match case {
                    FloodCase::OursNoFlooder => "ours, no flooder",
                    FloodCase::OursOn => "ours, on",
                    FloodCase::OursOff => "ours, off",
                    FloodCase::OursSteady => "ours, 5 lines/s",
                    FloodCase::NgircdDefault => "ngircd, default",
                };
                Some((short.to_string(), BTreeMap::from([(case.kind().name(), v)])))
            })
            .collect()
    };
    let flood_p99 = flood_bars("p99_ms");
    let flood_gone = flood_bars("disconnected");
    // A run of some scenarios only draws their panels, not empty axes.
    let panels: Vec<(&str, &Bars)> = [
        ("fan-out: server CPU ms per 1000 deliveries, max rate", &cpu),
        ("fan-out: p99 latency (ms) at fixed rates", &p99),
        ("connections: one broadcast reaches all (ms)", &bcast),
        ("login storm: chat round-trip p99 during (ms)", &storm),
        ("flood: honest users' p99 latency (ms)", &flood_p99),
        ("flood: honest users disconnected", &flood_gone),
    ]
    .into_iter()
    .filter(|(_, bars)| !bars.is_empty())
    .collect();
    // Bars and legend for the servers this run measured, each in its own
    // colour whatever else ran.
    let servers: Vec<(usize, &str)> = MEASURED
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, s)| {
            panels
                .iter()
                .any(|(_, bars)| bars.iter().any(|(_, v)| v.contains_key(s)))
        })
        .collect();
    let rows_of_panels = panels.len().div_ceil(2).max(1);
    let height = 60 + 360 * rows_of_panels as u32;
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 18))
        .map_err(|e| err(&e))?;
    let (body, legend) = root.split_vertically(height - 60);
    let areas = body.split_evenly((rows_of_panels, 2));
    for ((title, bars), area) in panels.iter().zip(&areas) {
        panel(area, title, bars, &servers)?;
    }
    for (j, &(color, server)) in servers.iter().enumerate() {
        let x = 150 + j as i32 * 160;
        legend
            .draw(&Rectangle::new(
                [(x, 12), (x + 18, 28)],
                COLORS[color].filled(),
            ))
            .map_err(|e| err(&e))?;
        legend
            .draw(&Text::new(server, (x + 24, 12), ("sans-serif", 15)))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(case: FloodCase, p99: f64, gone: u64) -> Value {
        json!({"scenario": "flood", "case": case.name(), "server": case.kind().name(),
               "p50_ms": p99 / 4.0, "p99_ms": p99, "disconnected": gone})
    }

    #[test]
    fn a_case_of_one_figure_is_one_row_and_its_floor_is_quoted() {
        let records = vec![
            json!({"scenario": "tls-fanout", "case": "C=100 max plain", "server": "ours",
                   "cpu_ms_per_1000": 0.02, "deliveries_per_s": 1e7}),
            json!({"scenario": "tls-fanout", "case": "C=100 max TLS", "server": "ours",
                   "cpu_ms_per_1000": 0.034, "deliveries_per_s": 9e6}),
            json!({"scenario": "tls-fanout", "case": "sealing alone", "server": "ours",
                   "cpu_ms_per_1000": 0.006}),
        ];
        let rows = summarize(&records);
        let sealing: Vec<&Row> = rows.iter().filter(|r| r.case == "sealing alone").collect();
        assert_eq!(sealing.len(), 1, "only the figure it has");
        assert_eq!(sealing[0].metric, "cpu_ms_per_1000");
        let goal = crate::tls::targets(&rows, &[100], 1000)
            .into_iter()
            .find(|t| {
                t["target"]
                    .as_str()
                    .unwrap()
                    .contains("C=100, max: server CPU per delivery, ours TLS")
            })
            .unwrap();
        assert_eq!(goal["met"], json!(false));
        assert_eq!(
            goal["measured"],
            json!("0.0340 / 0.0200 ms per 1000 = 1.70x; sealing alone 0.0060 would make it 1.30x")
        );
    }

    #[test]
    fn a_fanout_only_run_charts_its_two_panels_and_every_server_it_measured() {
        let records: Vec<Value> = ["floor", "ours", "ours-ws"]
            .iter()
            .map(|server| {
                json!({"scenario": "fanout", "case": "C=100 max", "server": server,
                       "cpu_ms_per_1000": 0.03, "p99_ms": 5.0})
            })
            .chain(std::iter::once(
                json!({"scenario": "fanout", "case": "C=100 20k/s",
                "server": "ours", "cpu_ms_per_1000": 5.0, "p99_ms": 0.8}),
            ))
            .collect();
        let rows = summarize(&records);
        let path = std::env::temp_dir().join(format!("chart-test-{}.svg", std::process::id()));
        chart(&rows, &[], &path, "test").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("fan-out: server CPU ms"), "{svg}");
        assert!(svg.contains("fan-out: p99 latency"));
        assert!(!svg.contains("login storm"), "no empty panels");
        assert!(!svg.contains("one broadcast reaches all"));
        // plotters writes each text on a line of its own.
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        assert!(texts.contains(&"ours-ws"), "the browser door is charted");
        assert!(!texts.contains(&"ngircd"), "no legend for a server not run");
    }

    #[test]
    fn a_figure_without_a_goal_says_so_and_an_absent_one_is_not_measured() {
        let targets = [
            json!({"target": "idle browser", "measured": "1980 bytes", "met": null}),
            json!({"target": "storm", "measured": "-", "met": null}),
            json!({"target": "fan-out", "measured": "0.1", "met": false}),
        ];
        let md = markdown(&[], &[], &targets, "");
        assert!(
            md.contains("| idle browser | 1980 bytes | no goal |"),
            "{md}"
        );
        assert!(md.contains("| storm | - | not measured |"), "{md}");
        assert!(md.contains("| fan-out | 0.1 | **no** |"), "{md}");
    }

    #[test]
    fn a_server_that_stopped_short_is_shown_as_such_and_not_compared() {
        let case = "N=10 in one IRC channel";
        let records = vec![
            json!({"scenario": "connections", "case": case, "server": "ours-irc",
                   "completed": true, "setup_s": 90.0, "rss_per_conn_bytes": 100.0, "ready": 10}),
            json!({"scenario": "connections", "case": case, "server": "inspircd",
                   "completed": true, "setup_s": 60.0, "rss_per_conn_bytes": 200.0, "ready": 10}),
            json!({"scenario": "connections", "case": case, "server": "ngircd",
                   "completed": false, "setup_s": 240.0, "rss_per_conn_bytes": 50.0, "ready": 4}),
        ];
        let rows = summarize(&records);
        let row = |m| find(&rows, "connections", case, m).unwrap();
        assert_eq!(row("setup_s").show("ngircd"), "> 240.0 (stopped)");
        assert_eq!(row("ready").show("ngircd"), "4.000 (stopped)");
        // What it had when it stopped is no figure of the whole workload.
        assert_eq!(row("rss_per_conn_bytes").show("ngircd"), "-");
        assert_eq!(row("setup_s").ratio("ours-irc", "ngircd"), None);
        assert_eq!(row("setup_s").ratio("ours-irc", "inspircd"), Some(1.5));
    }

    #[test]
    fn flood_goal_is_judged_against_the_no_flooder_median() {
        let records = vec![
            rec(FloodCase::OursNoFlooder, 2.0, 0),
            rec(FloodCase::OursNoFlooder, 4.0, 0),
            rec(FloodCase::OursNoFlooder, 3.0, 0),
            rec(FloodCase::OursOn, 5.9, 0),
            rec(FloodCase::OursOff, 50.0, 7),
        ];
        let rows = flood_rows(&records);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            flood_value(&rows, FloodCase::OursNoFlooder, "p99_ms"),
            Some(3.0)
        );
        let t = targets(&[], &rows, &[], 10, 10);
        let goal = t.last().unwrap();
        assert_eq!(goal["met"], json!(true), "{goal}");
        let md = flood_markdown(&rows);
        assert!(
            md.contains("| ours, flood control off | - | 12.5 | 50.0 | - | 7 |"),
            "{md}"
        );
        // One disconnect with flood control on misses the goal.
        let mut records = records;
        records.push(rec(FloodCase::OursOn, 5.9, 1));
        let t = targets(&[], &flood_rows(&records), &[], 10, 10);
        assert_eq!(t.last().unwrap()["met"], json!(false));
    }
}
