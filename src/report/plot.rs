//! Plots with `plotters`: accuracy versus threshold, error CDF (log km), world map of query
//! locations coloured by error band. Each chart renders to an SVG string (no font needed) and,
//! when a TTF font was found at run time, to PNG bytes.
//!
//! Titles and legends are drawn as plain text at computed positions rather than through
//! plotters' caption/legend helpers, which need a font to measure text even for SVG output.

use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Paths searched for a sans-serif TTF when `GEORAG_FONT` is not set.
pub const FONT_CANDIDATES: [&str; 6] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
];

static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Register a TTF font for PNG text, once per process. `GEORAG_FONT=/path/to.ttf` chooses the
/// file, `GEORAG_FONT=none` disables PNG output; otherwise [`FONT_CANDIDATES`] are tried.
/// Returns the font used, or why none is available (PNG plots are then skipped).
pub fn font() -> Result<&'static Path, &'static str> {
    FONT.get_or_init(|| {
        let candidates: Vec<PathBuf> = match std::env::var_os("GEORAG_FONT") {
            Some(v) if v == "none" => return Err("GEORAG_FONT=none".to_string()),
            Some(v) => vec![PathBuf::from(v)],
            None => FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
        };
        for p in &candidates {
            let Ok(bytes) = std::fs::read(p) else { continue };
            // plotters keeps a &'static reference to the font data: leak it once per process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(p.clone());
            }
        }
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Err(format!("no usable TTF font found (tried {})", tried.join(", ")))
    })
    .as_ref()
    .map(|p| p.as_path())
    .map_err(|e| e.as_str())
}

/// A chart rendered in memory.
pub struct Rendered {
    pub svg: String,
    /// PNG bytes; `None` when no font is available.
    pub png: Option<Vec<u8>>,
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stroke {
    Solid,
    Dashed,
}

/// One line of a line chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub stroke: Stroke,
    /// Draw a marker at each point.
    pub markers: bool,
    /// Vertical interval bars (x, low, high).
    pub bars: Vec<(f64, f64, f64)>,
    /// Index into [`PALETTE`].
    pub color: usize,
}

/// The x axis of a line chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XAxis {
    /// Logarithmic (kilometres in the accuracy and error charts, queries/s in the index tuning
    /// curve), ticks as plain numbers.
    Log,
    /// Linear (training steps, epochs); whole ticks print as integers, others with one decimal.
    Linear,
}

/// A line chart: x axis per [`XAxis`], linear y axis.
#[derive(Clone, Debug)]
pub struct LineChart {
    pub x_axis: XAxis,
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub series: Vec<Series>,
    /// Extra line under the title (e.g. the convention).
    pub subtitle: Option<String>,
}

/// Categorical colours (Tableau 10).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const W: u32 = 1000;
const H: u32 = 640;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Render a line chart.
pub fn line_chart(c: &LineChart) -> Result<Rendered, String> {
    render_with((W, H), |r| draw_line_chart(r, c), |r| draw_line_chart(r, c))
}

/// Render a world map of points coloured by band.
pub fn world_map(m: &MapChart) -> Result<Rendered, String> {
    render_with((1100, 640), |r| draw_map(r, m), |r| draw_map(r, m))
}

/// Render through `svg_draw` to SVG and, with a font, through `png_draw` to PNG (the same
/// drawing code instantiated for each backend).
fn render_with<S, B>(size: (u32, u32), svg_draw: S, png_draw: B) -> Result<Rendered, String>
where
    S: Fn(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
    B: Fn(&DrawingArea<BitMapBackend, Shift>) -> Result<(), String>,
{
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        svg_draw(&root)?;
        root.present().map_err(err)?;
    }
    let png = if font().is_ok() {
        let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
            png_draw(&root)?;
            root.present().map_err(err)?;
        }
        let img = image::RgbImage::from_raw(size.0, size.1, buf).ok_or("bitmap size mismatch")?;
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, image::ImageFormat::Png).map_err(err)?;
        Some(bytes.into_inner())
    } else {
        None
    };
    Ok(Rendered { svg, png })
}

fn text_style(size: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(h, v)).color(&BLACK)
}

fn title<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, t: &str, sub: Option<&str>) -> Result<(), String> {
    let (w, _) = root.dim_in_pixel();
    root.draw(&Text::new(t.to_string(), (w as i32 / 2, 10), text_style(22, HPos::Center, VPos::Top)))
        .map_err(err)?;
    if let Some(s) = sub {
        root.draw(&Text::new(s.to_string(), (w as i32 / 2, 38), text_style(14, HPos::Center, VPos::Top)))
            .map_err(err)?;
    }
    Ok(())
}

/// A legend entry: label, colour, how the sample is drawn.
#[derive(Clone, Copy)]
enum Swatch {
    Line(Stroke, bool),
    Dot,
    Cross,
    /// A filled square (a choropleth's fill).
    Square,
}

fn legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    entries: &[(String, RGBColor, Swatch)],
) -> Result<(), String> {
    if entries.is_empty() {
        return Ok(());
    }
    let style = text_style(14, HPos::Left, VPos::Center);
    let text_w = entries
        .iter()
        .map(|(l, _, _)| match root.estimate_text_size(l, &style) {
            Ok((w, _)) => w as i32,
            Err(_) => 8 * l.chars().count() as i32,
        })
        .max()
        .unwrap_or(0);
    let row = 22;
    let (x, y) = at;
    let (w, h) = (text_w + 56, row * entries.len() as i32 + 10);
    root.draw(&Rectangle::new([(x, y), (x + w, y + h)], WHITE.mix(0.9).filled())).map_err(err)?;
    root.draw(&Rectangle::new([(x, y), (x + w, y + h)], RGBColor(160, 160, 160).stroke_width(1))).map_err(err)?;
    for (i, (label, color, swatch)) in entries.iter().enumerate() {
        let cy = y + 5 + row * i as i32 + row / 2;
        let (x0, x1) = (x + 8, x + 40);
        match swatch {
            Swatch::Line(stroke, markers) => {
                match stroke {
                    Stroke::Solid => {
                        root.draw(&PathElement::new(vec![(x0, cy), (x1, cy)], color.stroke_width(2))).map_err(err)?;
                    }
                    Stroke::Dashed => {
                        for s in [x0, x0 + 12, x0 + 24] {
                            root.draw(&PathElement::new(vec![(s, cy), (s + 8, cy)], color.stroke_width(2))).map_err(err)?;
                        }
                    }
                }
                if *markers {
                    root.draw(&Circle::new(((x0 + x1) / 2, cy), 4, color.filled())).map_err(err)?;
                }
            }
            Swatch::Dot => {
                root.draw(&Circle::new(((x0 + x1) / 2, cy), 5, color.filled())).map_err(err)?;
            }
            Swatch::Cross => {
                root.draw(&Cross::new(((x0 + x1) / 2, cy), 5, color.stroke_width(2))).map_err(err)?;
            }
            Swatch::Square => {
                let (cx, r) = ((x0 + x1) / 2, 7);
                root.draw(&Rectangle::new([(cx - r, cy - r), (cx + r, cy + r)], color.filled())).map_err(err)?;
                root.draw(&Rectangle::new([(cx - r, cy - r), (cx + r, cy + r)], COAST.stroke_width(1))).map_err(err)?;
            }
        }
        root.draw(&Text::new(label.clone(), (x1 + 8, cy), style.clone())).map_err(err)?;
    }
    Ok(())
}

/// `0.1`, `1`, `10`, `1,000`.
fn km_tick(v: f64) -> String {
    if v >= 1.0 {
        let s = format!("{v:.0}");
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

fn draw_line_chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &LineChart) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    title(root, &c.title, c.subtitle.as_deref())?;
    let top = if c.subtitle.is_some() { 64 } else { 48 };
    let area = root.margin(top, 10, 10, 30);
    let mut builder = ChartBuilder::on(&area);
    builder.x_label_area_size(55).y_label_area_size(70);
    let (x0, x1) = c.x_range;
    let y = c.y_range.0..c.y_range.1;
    match c.x_axis {
        XAxis::Log => {
            let chart = builder.build_cartesian_2d((x0..x1).log_scale(), y).map_err(err)?;
            draw_lines(root, chart, c, &|v| km_tick(*v), &|x| x > 0.0)
        }
        XAxis::Linear => {
            let chart = builder.build_cartesian_2d(x0..x1, y).map_err(err)?;
            draw_lines(root, chart, c, &|v| if v.fract().abs() < 1e-9 { format!("{v:.0}") } else { format!("{v:.1}") }, &|_| true)
        }
    }
}

/// The mesh, series and legend of a line chart on either x axis; `keep` drops points the axis
/// cannot show (x <= 0 on a log axis).
fn draw_lines<DB: DrawingBackend, X: Ranged<ValueType = f64> + ValueFormatter<f64>>(
    root: &DrawingArea<DB, Shift>,
    mut chart: ChartContext<'_, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    c: &LineChart,
    x_label: &dyn Fn(&f64) -> String,
    keep: &dyn Fn(f64) -> bool,
) -> Result<(), String> {
    chart
        .configure_mesh()
        .x_desc(c.x_desc.as_str())
        .y_desc(c.y_desc.as_str())
        .x_label_formatter(x_label)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()
        .map_err(err)?;
    for s in &c.series {
        let color = PALETTE[s.color % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|(x, _)| keep(*x)).collect();
        match s.stroke {
            Stroke::Solid => {
                chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2))).map_err(err)?;
            }
            Stroke::Dashed => {
                chart
                    .draw_series(DashedLineSeries::new(pts.clone(), 8, 6, color.stroke_width(2)))
                    .map_err(err)?;
            }
        }
        if s.markers {
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
                .map_err(err)?;
        }
        for &(x, lo, hi) in &s.bars {
            chart
                .draw_series(std::iter::once(PathElement::new(vec![(x, lo), (x, hi)], color.stroke_width(2))))
                .map_err(err)?;
        }
    }
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let entries: Vec<(String, RGBColor, Swatch)> = c
        .series
        .iter()
        .map(|s| (s.label.clone(), PALETTE[s.color % PALETTE.len()], Swatch::Line(s.stroke, s.markers)))
        .collect();
    legend(root, (xr.start + 12, yr.start + 10), &entries)?;
    Ok(())
}

/// A grid of values (e.g. accuracy over two swept settings), each cell coloured on a
/// sequential ramp from `range.0` (light) to `range.1` (dark) and labelled with its value.
#[derive(Clone, Debug)]
pub struct HeatMap {
    pub title: String,
    pub subtitle: Option<String>,
    pub x_desc: String,
    pub y_desc: String,
    pub x_labels: Vec<String>,
    pub y_labels: Vec<String>,
    /// `cells[y][x]`; `None` is drawn grey and labelled "n/a".
    pub cells: Vec<Vec<Option<f64>>>,
    pub range: (f64, f64),
    /// How a cell's value is printed.
    pub decimals: usize,
}

/// Render a heat map.
pub fn heat_map(h: &HeatMap) -> Result<Rendered, String> {
    render_with((W, H), |r| draw_heat_map(r, h), |r| draw_heat_map(r, h))
}

/// The colour of `v` on a light-to-dark blue ramp over `range`.
pub fn ramp(v: f64, range: (f64, f64)) -> RGBColor {
    let t = if range.1 > range.0 { ((v - range.0) / (range.1 - range.0)).clamp(0.0, 1.0) } else { 0.5 };
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
    RGBColor(lerp(239, 8), lerp(243, 48), lerp(255, 107))
}

fn draw_heat_map<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, h: &HeatMap) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    title(root, &h.title, h.subtitle.as_deref())?;
    let top = if h.subtitle.is_some() { 64 } else { 48 };
    let area = root.margin(top, 10, 10, 30);
    let (nx, ny) = (h.x_labels.len().max(1), h.y_labels.len().max(1));
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(55)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..nx as f64, 0.0..ny as f64)
        .map_err(err)?;
    let label = |labels: &[String], v: f64| {
        let i = v - 0.5;
        if i >= 0.0 && i.fract().abs() < 1e-9 { labels.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(h.x_desc.as_str())
        .y_desc(h.y_desc.as_str())
        .x_labels(2 * nx + 1)
        .y_labels(2 * ny + 1)
        .x_label_formatter(&|v| label(&h.x_labels, *v))
        .y_label_formatter(&|v| label(&h.y_labels, *v))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(err)?;
    for (y, row) in h.cells.iter().enumerate() {
        for (x, c) in row.iter().enumerate() {
            let (x0, y0) = (x as f64, y as f64);
            let fill = c.map_or(RGBColor(200, 200, 200), |v| ramp(v, h.range));
            chart.draw_series(std::iter::once(Rectangle::new([(x0, y0), (x0 + 1.0, y0 + 1.0)], fill.filled()))).map_err(err)?;
            let text = c.map_or_else(|| "n/a".to_string(), |v| format!("{v:.*}", h.decimals));
            let dark = c.is_some_and(|v| h.range.1 > h.range.0 && (v - h.range.0) / (h.range.1 - h.range.0) > 0.55);
            let style = text_style(16, HPos::Center, VPos::Center).color(if dark { &WHITE } else { &BLACK });
            chart.draw_series(std::iter::once(Text::new(text, (x0 + 0.5, y0 + 0.5), style))).map_err(err)?;
        }
    }
    Ok(())
}

/// A point of the world map: location and band index (`bands.len()` means "failed").
#[derive(Clone, Debug)]
pub struct MapChart {
    pub title: String,
    pub subtitle: Option<String>,
    /// (lat, lon, band): band indexes [`MapChart::bands`]; `None` = failed prediction.
    pub points: Vec<(f64, f64, Option<usize>)>,
    /// Band labels with their counts, closest first.
    pub bands: Vec<String>,
    /// Legend label of the `None` points, before their count (`failed` when unset).
    pub none_label: Option<String>,
    /// A choropleth's country fills: alpha-2 code -> band index, `None` = too few images (grey).
    /// Countries not in the map keep the plain land colour. Empty for a point map.
    pub country_bands: std::collections::HashMap<String, Option<usize>>,
    /// Legend label of the countries with `None` in [`MapChart::country_bands`].
    pub grey_label: Option<String>,
}

/// Colours of error bands, closest (green) to farthest (dark red), then grey for failures.
pub fn band_color(i: usize, n: usize) -> RGBColor {
    const RAMP: [RGBColor; 6] = [
        RGBColor(0, 104, 55),
        RGBColor(49, 163, 84),
        RGBColor(173, 221, 142),
        RGBColor(254, 178, 76),
        RGBColor(240, 59, 32),
        RGBColor(128, 0, 38),
    ];
    if n <= 1 {
        return RAMP[0];
    }
    RAMP[(i * (RAMP.len() - 1) + (n - 1) / 2) / (n - 1)]
}

const FAILED_GREY: RGBColor = RGBColor(110, 110, 110);
const SEA: RGBColor = RGBColor(236, 243, 250);
const LAND: RGBColor = RGBColor(250, 249, 244);
const GREY_COUNTRY: RGBColor = RGBColor(196, 196, 196);
const COAST: RGBColor = RGBColor(120, 132, 148);
const BORDER: RGBColor = RGBColor(170, 176, 186);

fn draw_map<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, m: &MapChart) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    title(root, &m.title, m.subtitle.as_deref())?;
    let top = if m.subtitle.is_some() { 64 } else { 48 };
    let area = root.margin(top, 10, 10, 250);
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-180f64..180f64, -90f64..90f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(7)
        .y_labels(7)
        .x_label_formatter(&|v| format!("{v:.0}°"))
        .y_label_formatter(&|v| format!("{v:.0}°"))
        .x_desc("longitude (°)")
        .y_desc("latitude (°)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    chart.plotting_area().fill(&SEA).map_err(err)?;
    // Graticule every 30 degrees, under the land.
    let grid = RGBColor(205, 212, 222);
    for lon in (-180..=180).step_by(30) {
        let l = lon as f64;
        chart.draw_series(std::iter::once(PathElement::new(vec![(l, -90.0), (l, 90.0)], grid.stroke_width(1)))).map_err(err)?;
    }
    for lat in (-90..=90).step_by(30) {
        let l = lat as f64;
        let style = if lat == 0 { RGBColor(150, 160, 175).stroke_width(1) } else { grid.stroke_width(1) };
        chart.draw_series(std::iter::once(PathElement::new(vec![(-180.0, l), (180.0, l)], style))).map_err(err)?;
    }
    // Land, coastlines and borders: Natural Earth 1:110m (crate::region::outline).
    let world = crate::region::outline::world();
    let nb = m.bands.len();
    for &i in &world.fill_order {
        let c = &world.countries[i];
        let fill = match m.country_bands.get(c.code) {
            Some(Some(b)) => band_color(*b, nb),
            Some(None) => GREY_COUNTRY,
            None => LAND,
        };
        chart.draw_series(c.fill_rings.iter().map(|r| Polygon::new(r.clone(), fill.filled()))).map_err(err)?;
    }
    for (kind, line) in &world.lines {
        let style = match kind {
            crate::region::outline::LineKind::Coast => COAST.stroke_width(1),
            crate::region::outline::LineKind::Border => BORDER.stroke_width(1),
        };
        chart.draw_series(std::iter::once(PathElement::new(line.clone(), style))).map_err(err)?;
    }
    // Far errors first so that close hits stay visible on top.
    for band in (0..=nb).rev() {
        let want = if band == nb { None } else { Some(band) };
        let pts = m.points.iter().filter(|p| p.2 == want);
        if want.is_none() {
            chart
                .draw_series(pts.map(|&(lat, lon, _)| Cross::new((lon, lat), 3, FAILED_GREY.stroke_width(1))))
                .map_err(err)?;
        } else {
            let color = band_color(band, nb);
            chart
                .draw_series(pts.map(|&(lat, lon, _)| Circle::new((lon, lat), 3, color.filled())))
                .map_err(err)?;
        }
    }
    let choropleth = !m.country_bands.is_empty();
    let swatch = if choropleth { Swatch::Square } else { Swatch::Dot };
    let mut entries: Vec<(String, RGBColor, Swatch)> =
        m.bands.iter().enumerate().map(|(i, l)| (l.clone(), band_color(i, nb), swatch)).collect();
    if choropleth {
        let grey = m.country_bands.values().filter(|b| b.is_none()).count();
        entries.push((format!("{} ({grey})", m.grey_label.as_deref().unwrap_or("too few images")), GREY_COUNTRY, Swatch::Square));
        entries.push(("no images".into(), LAND, Swatch::Square));
    }
    let failed = m.points.iter().filter(|p| p.2.is_none()).count();
    if !choropleth || failed > 0 {
        entries.push((format!("{} ({failed})", m.none_label.as_deref().unwrap_or("failed")), FAILED_GREY, Swatch::Cross));
    }
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    legend(root, (xr.end + 14, yr.start), &entries)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn km_ticks_are_readable() {
        assert_eq!(km_tick(1.0), "1");
        assert_eq!(km_tick(2500.0), "2,500");
        assert_eq!(km_tick(20000.0), "20,000");
        assert_eq!(km_tick(0.1), "0.1");
    }

    #[test]
    fn band_colours_span_the_ramp() {
        assert_eq!(band_color(0, 6), RGBColor(0, 104, 55));
        assert_eq!(band_color(5, 6), RGBColor(128, 0, 38));
        assert_ne!(band_color(2, 6), band_color(3, 6));
    }
}
