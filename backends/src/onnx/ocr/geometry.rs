//! Text-box geometry for the DB detector's output: connected regions of
//! the probability map, their minimum-area rotated rectangles, scores and
//! "unclip" (grow each box by area × ratio / perimeter, as PaddleOCR does).

/// A point in pixels.
pub type Point = [f32; 2];

/// 8-connected regions of `mask` (`width` × `height`), each as its pixels'
/// coordinates; at most `limit` regions.
pub fn regions(mask: &[bool], width: usize, height: usize, limit: usize) -> Vec<Vec<(usize, usize)>> {
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        if out.len() == limit {
            break;
        }
        let mut region = Vec::new();
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            region.push((x, y));
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= width as i64 || ny >= height as i64 {
                        continue;
                    }
                    let j = ny as usize * width + nx as usize;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(region);
    }
    out
}

fn cross(o: Point, a: Point, b: Point) -> f32 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Convex hull (Andrew's monotone chain), counter-clockwise.
pub fn hull(mut points: Vec<Point>) -> Vec<Point> {
    points.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    points.dedup();
    if points.len() < 3 {
        return points;
    }
    let mut lower: Vec<Point> = Vec::new();
    for &p in &points {
        while lower.len() >= 2 && cross(lower[lower.len() - 2], lower[lower.len() - 1], p) <= 0.0 {
            lower.pop();
        }
        lower.push(p);
    }
    let mut upper: Vec<Point> = Vec::new();
    for &p in points.iter().rev() {
        while upper.len() >= 2 && cross(upper[upper.len() - 2], upper[upper.len() - 1], p) <= 0.0 {
            upper.pop();
        }
        upper.push(p);
    }
    lower.pop();
    upper.pop();
    lower.extend(upper);
    lower
}

/// A rotated rectangle: centre, side lengths along `axis` and its normal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub center: Point,
    /// Unit vector of the first side.
    pub axis: Point,
    pub width: f32,
    pub height: f32,
}

impl Rect {
    /// The shorter side.
    pub fn short_side(&self) -> f32 {
        self.width.min(self.height)
    }

    /// Grown by `d` on every side.
    pub fn grown(&self, d: f32) -> Rect {
        Rect { width: self.width + 2.0 * d, height: self.height + 2.0 * d, ..*self }
    }

    /// Corners ordered top-left, top-right, bottom-right, bottom-left (as
    /// PaddleOCR's `get_mini_boxes` orders them).
    pub fn corners(&self) -> [Point; 4] {
        let [cx, cy] = self.center;
        let (u, v) = (self.axis, [-self.axis[1], self.axis[0]]);
        let (hw, hh) = (self.width / 2.0, self.height / 2.0);
        let mut pts = [
            [cx - u[0] * hw - v[0] * hh, cy - u[1] * hw - v[1] * hh],
            [cx + u[0] * hw - v[0] * hh, cy + u[1] * hw - v[1] * hh],
            [cx + u[0] * hw + v[0] * hh, cy + u[1] * hw + v[1] * hh],
            [cx - u[0] * hw + v[0] * hh, cy - u[1] * hw + v[1] * hh],
        ];
        pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
        let (tl, bl) = if pts[1][1] > pts[0][1] { (pts[0], pts[1]) } else { (pts[1], pts[0]) };
        let (tr, br) = if pts[3][1] > pts[2][1] { (pts[2], pts[3]) } else { (pts[3], pts[2]) };
        [tl, tr, br, bl]
    }
}

/// The minimum-area rectangle around `points` (rotating calipers over the hull).
pub fn min_area_rect(points: Vec<Point>) -> Option<Rect> {
    let hull = hull(points);
    match hull.len() {
        0 => return None,
        1 => return Some(Rect { center: hull[0], axis: [1.0, 0.0], width: 0.0, height: 0.0 }),
        _ => {}
    }
    let mut best: Option<(f32, Rect)> = None;
    for i in 0..hull.len() {
        let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        if len == 0.0 {
            continue;
        }
        let u = [(b[0] - a[0]) / len, (b[1] - a[1]) / len];
        let v = [-u[1], u[0]];
        let (mut lo_u, mut hi_u, mut lo_v, mut hi_v) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for p in &hull {
            let (pu, pv) = (p[0] * u[0] + p[1] * u[1], p[0] * v[0] + p[1] * v[1]);
            lo_u = lo_u.min(pu);
            hi_u = hi_u.max(pu);
            lo_v = lo_v.min(pv);
            hi_v = hi_v.max(pv);
        }
        let area = (hi_u - lo_u) * (hi_v - lo_v);
        if best.as_ref().is_none_or(|(a, _)| area < *a) {
            let (mu, mv) = ((lo_u + hi_u) / 2.0, (lo_v + hi_v) / 2.0);
            let center = [mu * u[0] + mv * v[0], mu * u[1] + mv * v[1]];
            best = Some((area, Rect { center, axis: u, width: hi_u - lo_u, height: hi_v - lo_v }));
        }
    }
    best.map(|(_, rect)| rect)
}

/// The rectangle of a detected region, like OpenCV's `minAreaRect` on its
/// contour: pixels as unit squares, so a one-pixel-wide stroke has width 1.
pub fn region_rect(region: &[(usize, usize)]) -> Option<Rect> {
    // The pixels' corners bound the region; the hull only needs the extremes of each row.
    let mut rows: std::collections::BTreeMap<usize, (usize, usize)> = std::collections::BTreeMap::new();
    for &(x, y) in region {
        let e = rows.entry(y).or_insert((x, x));
        e.0 = e.0.min(x);
        e.1 = e.1.max(x);
    }
    let mut points = Vec::with_capacity(rows.len() * 4);
    for (&y, &(x0, x1)) in &rows {
        let (y0, y1, x0, x1) = (y as f32, y as f32 + 1.0, x0 as f32, x1 as f32 + 1.0);
        points.extend([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]);
    }
    min_area_rect(points)
}

/// Mean of `map` inside the quadrilateral `box` (PaddleOCR's "fast" score).
pub fn box_score(map: &[f32], width: usize, height: usize, corners: &[Point; 4]) -> f32 {
    let clamp = |v: f32, hi: usize| (v.max(0.0) as usize).min(hi.saturating_sub(1));
    let xs = corners.iter().map(|p| p[0]);
    let ys = corners.iter().map(|p| p[1]);
    let (x0, x1) = (
        clamp(xs.clone().fold(f32::MAX, f32::min).floor(), width),
        clamp(xs.fold(f32::MIN, f32::max).ceil(), width),
    );
    let (y0, y1) = (
        clamp(ys.clone().fold(f32::MAX, f32::min).floor(), height),
        clamp(ys.fold(f32::MIN, f32::max).ceil(), height),
    );
    let inside = |p: Point| {
        let signs: Vec<bool> = (0..4).map(|i| cross(corners[i], corners[(i + 1) % 4], p) >= 0.0).collect();
        signs.iter().all(|&s| s) || signs.iter().all(|&s| !s)
    };
    let (mut sum, mut n) = (0f32, 0u32);
    for y in y0..=y1 {
        for x in x0..=x1 {
            if inside([x as f32 + 0.5, y as f32 + 0.5]) {
                sum += map[y * width + x];
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f32
    }
}

/// PaddleOCR's unclip distance for a rectangle: area × ratio / perimeter.
pub fn unclip_distance(rect: &Rect, ratio: f32) -> f32 {
    let perimeter = 2.0 * (rect.width + rect.height);
    if perimeter == 0.0 {
        0.0
    } else {
        rect.width * rect.height * ratio / perimeter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_block_gets_its_tight_rectangle() {
        // A 20 × 4 bar at 0°, then the same set rotated by 90°.
        let bar: Vec<(usize, usize)> = (0..20).flat_map(|x| (0..4).map(move |y| (x + 5, y + 7))).collect();
        let rect = region_rect(&bar).unwrap();
        assert!(
            (rect.width.max(rect.height) - 20.0).abs() < 1e-4 && (rect.short_side() - 4.0).abs() < 1e-4,
            "{rect:?}"
        );
        let [tl, tr, br, bl] = rect.corners();
        assert_eq!((tl, tr, br, bl), ([5.0, 7.0], [25.0, 7.0], [25.0, 11.0], [5.0, 11.0]));
        let grown = rect.grown(unclip_distance(&rect, 1.6));
        assert!((grown.short_side() - (4.0 + 2.0 * 80.0 * 1.6 / 48.0)).abs() < 1e-3);
    }

    #[test]
    fn regions_are_eight_connected_and_scored_inside_their_box() {
        let (w, h) = (6, 4);
        let mut mask = vec![false; w * h];
        for i in [0, 7, 14, 5] {
            mask[i] = true; // a diagonal, and a lone pixel at the top right
        }
        let found = regions(&mask, w, h, 10);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].len(), 3);
        let map: Vec<f32> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
        let whole = [[0.0, 0.0], [6.0, 0.0], [6.0, 4.0], [0.0, 4.0]];
        assert!((box_score(&map, w, h, &whole) - 4.0 / 24.0).abs() < 1e-6);
        assert_eq!(regions(&mask, w, h, 1).len(), 1, "limit");
    }
}
