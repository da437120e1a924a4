//! `--plot FILE`: the latency distribution of each phase of a venue run,
//! drawn as cumulative distributions (one panel per phase) in SVG.

use std::path::Path;

use anyhow::bail;
use plotters::prelude::*;

/// One panel: a phase's name and its per-device latencies in milliseconds.
pub type Series<'a> = (&'a str, &'a [f64]);

/// Writes an SVG with one cumulative-distribution panel per non-empty series.
pub fn latency_svg(path: &Path, title: &str, series: &[Series<'_>]) -> anyhow::Result<()> {
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        bail!(
            "{}: plots are written as SVG; name the file *.svg",
            path.display()
        );
    }
    let panels: Vec<&Series<'_>> = series.iter().filter(|(_, v)| !v.is_empty()).collect();
    if panels.is_empty() {
        bail!("nothing to plot: no phase has latencies");
    }
    let height = 60 + 300 * panels.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| fail(&e))?;
    let areas = root.split_evenly((panels.len(), 1));
    for (area, (name, values)) in areas.iter().zip(panels) {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let pick = |q: f64| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        let max = sorted[n - 1].max(1.0);
        let caption = format!(
            "{name}: {n} samples; p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            pick(0.50),
            pick(0.95),
            pick(0.99),
            max
        );
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..max * 1.02, 0f64..1f64)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("latency (ms)")
            .y_desc("fraction of devices")
            .draw()
            .map_err(|e| fail(&e))?;
        let points = sorted
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, (i + 1) as f64 / n as f64));
        chart
            .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_has_one_panel_per_phase_with_its_percentiles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.svg");
        let join: Vec<f64> = (1..=100).map(f64::from).collect();
        let storm = vec![5.0, 10.0];
        latency_svg(
            &path,
            "test run",
            &[("join", &join), ("changes", &[]), ("storm", &storm)],
        )
        .expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"), "not an SVG");
        assert!(svg.contains("join: 100 samples; p50 50 ms, p95 95 ms, p99 99 ms"));
        assert!(svg.contains("storm: 2 samples"));
        assert!(!svg.contains("changes:"), "an empty phase gets no panel");
        let e = latency_svg(&dir.path().join("p.png"), "t", &[("join", &join)]);
        assert!(e.is_err_and(|e| e.to_string().contains("SVG")));
    }
}
