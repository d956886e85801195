//! SVG plots drawn with plotters' SVG backend. Each function returns the SVG text; a plot without
//! data returns an SVG that says so (never an empty frame). Colours are fixed per method (registry
//! `MethodInfo::color`), so a method has the same colour in every plot.

use crate::nn::registry::Method;
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::element::ComposedElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The method's colour ([`MethodInfo::color`](crate::nn::MethodInfo)); unknown names get grey.
pub fn method_color(method: &str) -> RGBColor {
    Method::ALL
        .iter()
        .find(|m| m.name() == method)
        .map(|m| {
            let (r, g, b) = m.info().color;
            RGBColor(r, g, b)
        })
        .unwrap_or(RGBColor(128, 128, 128))
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

fn svg(w: u32, h: u32, draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}

/// An SVG that states why there is nothing to plot.
pub fn no_data(title: &str, why: &str) -> Result<String> {
    svg(480, 120, |root| {
        root.draw(&Text::new(title.to_string(), (12, 30), ("sans-serif", 16).into_font())).map_err(err)?;
        root.draw(&Text::new(format!("no data: {why}"), (12, 70), ("sans-serif", 14).into_font().color(&RED)))
            .map_err(err)?;
        Ok(())
    })
}

/// Range `[lo, hi]` of the finite values, padded for a log axis (factor) or a linear one.
fn log_range(v: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = v.filter(|x| x.is_finite() && *x > 0.0).fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    (lo <= hi).then_some((lo / 1.5, hi * 1.5))
}
fn lin_range(v: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = v.filter(|x| x.is_finite()).fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    if lo > hi {
        return None;
    }
    let pad = ((hi - lo) * 0.1).max(0.5);
    Some((lo - pad, hi + pad))
}

/// The six radar axes in the paper's Figure 1 order.
pub const RADAR_AXES: [&str; 6] =
    ["robust accuracy", "accuracy", "training time", "inference time", "training memory", "inference memory"];

/// Radar chart for one method: scores 1–5 on six axes (plotters has no radar chart, so it is
/// drawn from polygons, lines and text). `ours` is filled; `paper` (if given) is a grey outline.
/// A missing score is drawn at the centre and its axis label says "n/a".
pub fn radar(method: &str, ours: &[Option<i64>; 6], paper: Option<&[Option<i64>; 6]>) -> Result<String> {
    if ours.iter().all(Option::is_none) {
        return no_data(&format!("{method}: radar"), "no runs or measurements for this method");
    }
    let (w, h) = (340u32, 320u32);
    let (cx, cy, r) = (170.0f64, 175.0f64, 100.0f64);
    let at = |axis: usize, score: f64| -> (i32, i32) {
        let a = -std::f64::consts::FRAC_PI_2 + axis as f64 * std::f64::consts::TAU / 6.0;
        ((cx + r * score / 5.0 * a.cos()).round() as i32, (cy + r * score / 5.0 * a.sin()).round() as i32)
    };
    let color = method_color(method);
    svg(w, h, |root| {
        root.draw(&Text::new(method.to_string(), (12, 22), ("sans-serif", 18).into_font())).map_err(err)?;
        for ring in 1..=5 {
            let mut pts: Vec<(i32, i32)> = (0..6).map(|a| at(a, ring as f64)).collect();
            pts.push(pts[0]);
            root.draw(&PathElement::new(pts, RGBColor(210, 210, 210))).map_err(err)?;
        }
        for (a, name) in RADAR_AXES.iter().enumerate() {
            root.draw(&PathElement::new(vec![at(a, 0.0), at(a, 5.0)], RGBColor(180, 180, 180))).map_err(err)?;
            let (x, y) = at(a, 6.2);
            let label = match ours[a] {
                Some(s) => format!("{name} {s}"),
                None => format!("{name} n/a"),
            };
            let pos = Pos::new(HPos::Center, VPos::Center);
            let style = TextStyle::from(("sans-serif", 11).into_font()).pos(pos);
            root.draw(&Text::new(label, (x, y), style)).map_err(err)?;
        }
        if let Some(p) = paper {
            let mut pts: Vec<(i32, i32)> = (0..6).map(|a| at(a, p[a].unwrap_or(0) as f64)).collect();
            pts.push(pts[0]);
            root.draw(&PathElement::new(pts, ShapeStyle::from(&BLACK.mix(0.6)).stroke_width(1))).map_err(err)?;
        }
        let pts: Vec<(i32, i32)> = (0..6).map(|a| at(a, ours[a].unwrap_or(0) as f64)).collect();
        root.draw(&Polygon::new(pts.clone(), color.mix(0.35))).map_err(err)?;
        let mut closed = pts.clone();
        closed.push(pts[0]);
        root.draw(&PathElement::new(closed, ShapeStyle::from(&color).stroke_width(2))).map_err(err)?;
        for p in pts {
            root.draw(&Circle::new(p, 3, color.filled())).map_err(err)?;
        }
        if paper.is_some() {
            root.draw(&Text::new(
                "filled: ours · grey line: paper",
                (12, h as i32 - 10),
                ("sans-serif", 10).into_font(),
            ))
            .map_err(err)?;
        }
        Ok(())
    })
}

/// A labelled point, with its standard deviation over seeds when there are several.
#[derive(Clone, Debug)]
pub struct Point {
    pub method: String,
    pub label: String,
    pub x: f64,
    pub y: f64,
    /// Standard deviation of `y` (drawn as an error bar of ±1 std).
    pub y_std: Option<f64>,
}

/// A point as a dot in its method's colour with its label at `offset` pixels from the centre
/// (top-left corner of the text), `font_px` high.
fn labelled_dot<DB: DrawingBackend>(
    p: &Point,
    offset: (i32, i32),
    font_px: u32,
) -> ComposedElement<(f64, f64), DB, Circle<(i32, i32), i32>, Text<'static, (i32, i32), String>> {
    let c = method_color(&p.method);
    EmptyElement::at((p.x, p.y))
        + Circle::new((0, 0), 5, c.filled())
        + Text::new(p.label.clone(), offset, ("sans-serif", font_px).into_font())
}

/// Pixel box `(left, top, right, bottom)` of a label of `chars` characters at `font_px`, placed
/// at `offset` from a dot at `at` (sans-serif averages ~0.6 em per character).
fn label_box(at: (i32, i32), offset: (i32, i32), chars: usize, font_px: u32) -> (i32, i32, i32, i32) {
    let (w, h) = ((chars as f64 * font_px as f64 * 0.6).ceil() as i32, font_px as i32);
    (at.0 + offset.0, at.1 + offset.1, at.0 + offset.0 + w, at.1 + offset.1 + h)
}

fn overlaps(a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// Label offsets for dots at pixel positions `at` with labels of `chars` characters: each label
/// takes the first of a ring of candidate places (upper right, lower right, upper left, lower left,
/// then further out) whose box overlaps no label placed before it and no dot; when none is free,
/// the upper right.
pub fn place_labels(at: &[(i32, i32)], chars: &[usize], font_px: u32) -> Vec<(i32, i32)> {
    let h = font_px as i32;
    let dots: Vec<(i32, i32, i32, i32)> = at.iter().map(|&(x, y)| (x - 5, y - 5, x + 6, y + 6)).collect();
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    let mut out = Vec::with_capacity(at.len());
    for (i, (&p, &n)) in at.iter().zip(chars).enumerate() {
        let w = (n as f64 * font_px as f64 * 0.6).ceil() as i32;
        let mut candidates = Vec::new();
        for ring in 0..4 {
            let dy = ring * (h + 2);
            candidates.extend([(7, -h - 2 - dy), (7, 2 + dy), (-7 - w, -h - 2 - dy), (-7 - w, 2 + dy)]);
        }
        let free = |o: &(i32, i32)| {
            let b = label_box(p, *o, n, font_px);
            !placed.iter().any(|q| overlaps(b, *q)) && !dots.iter().enumerate().any(|(j, d)| j != i && overlaps(b, *d))
        };
        let chosen = candidates.iter().copied().find(free).unwrap_or(candidates[0]);
        placed.push(label_box(p, chosen, n, font_px));
        out.push(chosen);
    }
    out
}

/// Draws `points` as labelled dots with non-overlapping labels ([`place_labels`]) and, where a
/// point has a standard deviation, a vertical error bar of ±1 std.
fn draw_points<DB: DrawingBackend, X: Ranged<ValueType = f64>, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    points: &[Point],
    font_px: u32,
) -> Result<()> {
    for p in points {
        if let Some(sd) = p.y_std.filter(|s| s.is_finite() && *s > 0.0) {
            let color = method_color(&p.method);
            chart.draw_series(std::iter::once(PathElement::new(vec![(p.x, p.y - sd), (p.x, p.y + sd)], color.stroke_width(1)))).map_err(err)?;
        }
    }
    let at: Vec<(i32, i32)> = points.iter().map(|p| chart.backend_coord(&(p.x, p.y))).collect();
    let chars: Vec<usize> = points.iter().map(|p| p.label.chars().count()).collect();
    let offsets = place_labels(&at, &chars, font_px);
    chart.draw_series(points.iter().zip(offsets).map(|(p, o)| labelled_dot(p, o, font_px))).map_err(err)?;
    Ok(())
}

/// Indices of the Pareto-optimal points: no other point is at least as fast (x ≤) and at least
/// as robust (y ≥) with one of the two strictly better.
pub fn pareto_front(points: &[Point]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| {
            let p = &points[i];
            !points.iter().any(|q| q.x <= p.x && q.y >= p.y && (q.x < p.x || q.y > p.y))
        })
        .collect()
}

/// CRA against training time per epoch (log x), one point per method × size; the Pareto front is
/// joined by a black line and its points ringed.
pub fn pareto(title: &str, points: &[Point], x_desc: &str, y_desc: &str) -> Result<String> {
    let (Some((x0, x1)), Some((y0, y1))) =
        (log_range(points.iter().map(|p| p.x)), lin_range(points.iter().map(|p| p.y)))
    else {
        return no_data(title, "no certified run with a time measurement");
    };
    let mut front: Vec<&Point> = pareto_front(points).into_iter().map(|i| &points[i]).collect();
    front.sort_by(|a, b| a.x.total_cmp(&b.x));
    svg(640, 420, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(front.iter().map(|p| (p.x, p.y)), ShapeStyle::from(&BLACK).stroke_width(1)))
            .map_err(err)?;
        for p in &front {
            chart
                .draw_series(std::iter::once(Circle::new((p.x, p.y), 8, ShapeStyle::from(&BLACK).stroke_width(1))))
                .map_err(err)?;
        }
        draw_points(&mut chart, points, 11)?;
        Ok(())
    })
}

/// A named series of (x, y) points.
#[derive(Clone, Debug)]
pub struct Series {
    pub method: String,
    pub points: Vec<(f64, f64)>,
}

/// Lines per method; x categorical by index with `x_labels` (e.g. XS…L) or numeric; y on a log
/// scale when `log_y`.
pub fn lines(
    title: &str,
    series: &[Series],
    x_labels: Option<&[&str]>,
    x_desc: &str,
    y_desc: &str,
    log_y: bool,
    note: &str,
) -> Result<String> {
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    let xr = lin_range(all().map(|p| p.0));
    let yr = if log_y { log_range(all().map(|p| p.1)) } else { lin_range(all().map(|p| p.1)) };
    let (Some((x0, x1)), Some((y0, y1))) = (xr, yr) else {
        return no_data(title, if note.is_empty() { "nothing measured" } else { note });
    };
    let (x0, x1) = match x_labels {
        Some(l) => (-0.3, l.len() as f64 - 0.7),
        None => (x0, x1),
    };
    svg(640, 400, |root| {
        let mut builder = ChartBuilder::on(root);
        builder.caption(title, ("sans-serif", 16)).margin(12).x_label_area_size(40).y_label_area_size(56);
        let fmt_x = |x: &f64| match x_labels {
            Some(l) => {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < l.len() {
                    l[i as usize].to_string()
                } else {
                    String::new()
                }
            }
            None => super::tables::significant(*x, 3),
        };
        let n_x = x_labels.map(|l| l.len() * 4).unwrap_or(8);
        macro_rules! body {
            ($chart:ident) => {{
                $chart
                    .configure_mesh()
                    .x_desc(x_desc)
                    .y_desc(y_desc)
                    .x_labels(n_x)
                    .x_label_formatter(&fmt_x)
                    .light_line_style(RGBColor(242, 242, 242))
                    .draw()
                    .map_err(err)?;
                for s in series {
                    let c = method_color(&s.method);
                    $chart
                        .draw_series(LineSeries::new(s.points.iter().copied(), ShapeStyle::from(&c).stroke_width(2)))
                        .map_err(err)?
                        .label(s.method.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
                    $chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(err)?;
                }
                $chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(err)?;
            }};
        }
        if log_y {
            let mut chart = builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale()).map_err(err)?;
            body!(chart);
        } else {
            let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
            body!(chart);
        }
        if !note.is_empty() {
            root.draw(&Text::new(note.to_string(), (70, 392), ("sans-serif", 11).into_font().color(&RED)))
                .map_err(err)?;
        }
        Ok(())
    })
}

/// Learning curves of one run: training loss (top) and validation/test CRA at 36/255 (bottom)
/// per epoch.
pub fn curves(title: &str, method: &str, epochs: &[f64], loss: &[f64], cra: &[f64]) -> Result<String> {
    let pts = |ys: &[f64]| -> Vec<(f64, f64)> {
        epochs.iter().zip(ys).filter(|(_, y)| y.is_finite()).map(|(&x, &y)| (x, y)).collect()
    };
    let (loss, cra) = (pts(loss), pts(cra));
    if loss.is_empty() && cra.is_empty() {
        return no_data(title, "epochs.csv has no finite values");
    }
    let c = method_color(method);
    svg(420, 340, |root| {
        let (top, bottom) = root.split_vertically(170);
        for (area, data, desc) in [(&top, &loss, "train loss"), (&bottom, &cra, "eval CRA 36/255 %")] {
            let Some((x0, x1)) = lin_range(epochs.iter().copied()) else { continue };
            let Some((y0, y1)) = lin_range(data.iter().map(|p| p.1)) else {
                area.draw(&Text::new(format!("{desc}: no data"), (60, 80), ("sans-serif", 12).into_font().color(&RED)))
                    .map_err(err)?;
                continue;
            };
            let mut b = ChartBuilder::on(area);
            b.margin(8).x_label_area_size(26).y_label_area_size(44);
            if std::ptr::eq(area, &top) {
                b.caption(title, ("sans-serif", 13));
            }
            let mut chart = b.build_cartesian_2d(x0.max(0.0)..x1, y0..y1).map_err(err)?;
            chart.configure_mesh().y_desc(desc).x_labels(6).y_labels(5).draw().map_err(err)?;
            chart
                .draw_series(LineSeries::new(data.iter().copied(), ShapeStyle::from(&c).stroke_width(2)))
                .map_err(err)?;
            chart.draw_series(data.iter().map(|&p| Circle::new(p, 2, c.filled()))).map_err(err)?;
        }
        Ok(())
    })
}

/// Our value against the paper's, with the diagonal y = x.
pub fn versus(title: &str, points: &[Point], x_desc: &str, y_desc: &str) -> Result<String> {
    let Some((lo, hi)) = lin_range(points.iter().flat_map(|p| [p.x, p.y])) else {
        return no_data(title, "no setting of ours matches one of the paper's (dataset, method, size, kernel, budget)");
    };
    svg(520, 460, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(err)?;
        chart.draw_series(LineSeries::new(vec![(lo, lo), (hi, hi)], BLACK.mix(0.5))).map_err(err)?;
        draw_points(&mut chart, points, 10)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: f64, y: f64) -> Point {
        Point { method: "AOL".into(), label: String::new(), x, y, y_std: None }
    }

    #[test]
    fn labels_of_coincident_points_do_not_overlap() {
        // Cayley-XS and SOC-XS at the same place (as in a quick report), a third close by.
        let at = [(100, 100), (100, 100), (104, 98)];
        let chars = [9, 6, 7];
        let offsets = place_labels(&at, &chars, 11);
        let boxes: Vec<_> = (0..3).map(|i| label_box(at[i], offsets[i], chars[i], 11)).collect();
        for i in 0..3 {
            for j in 0..i {
                assert!(!overlaps(boxes[i], boxes[j]), "labels {i} and {j} overlap: {boxes:?}");
            }
        }
        // The check can fail: the old fixed offset puts both labels in one box.
        assert!(overlaps(label_box(at[0], (7, -12), 9, 11), label_box(at[1], (7, -12), 6, 11)));
    }

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        // (1,50) fastest; (2,60) more robust; (3,55) dominated by (2,60); (4,70) most robust;
        // (2,60) duplicate-free; (5,70) dominated by (4,70) (slower, equal CRA).
        let pts = [p(1.0, 50.0), p(2.0, 60.0), p(3.0, 55.0), p(4.0, 70.0), p(5.0, 70.0)];
        assert_eq!(pareto_front(&pts), vec![0, 1, 3]);
    }

    #[test]
    fn radar_has_the_method_polygon_and_no_data_says_so() {
        let svg = radar("CPL", &[Some(4), Some(4), Some(5), Some(3), Some(5), Some(5)], None).unwrap();
        assert!(svg.contains("<polygon"), "{svg}");
        assert!(svg.contains("CPL"));
        let empty = radar("LOT", &[None; 6], None).unwrap();
        assert!(empty.contains("no data"));
    }
}
