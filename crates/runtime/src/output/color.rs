//! RGB ↔ Y'CbCr 4:2:0 conversion (ITU-R BT.601 / BT.709 / BT.2020 matrices, limited or full
//! range) and the colour description an H.264 sequence parameter set signals (H.264 Annex E).

/// The Y'CbCr matrix (luma weights `Kr`, `Kb`) of a video stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YuvMatrix {
    /// ITU-R BT.601 (SMPTE 170M, BT.470 BG): `Kr = 0.299`, `Kb = 0.114`.
    Bt601,
    /// ITU-R BT.709: `Kr = 0.2126`, `Kb = 0.0722`.
    Bt709,
    /// ITU-R BT.2020 non-constant luminance: `Kr = 0.2627`, `Kb = 0.0593`.
    Bt2020,
}

impl YuvMatrix {
    fn weights(self) -> (f32, f32) {
        match self {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
            YuvMatrix::Bt2020 => (0.2627, 0.0593),
        }
    }
}

/// How 8-bit Y'CbCr samples map to RGB: the matrix and the sample range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColorSpace {
    /// The Y'CbCr matrix.
    pub matrix: YuvMatrix,
    /// Full range (0–255) rather than limited range (luma 16–235, chroma 16–240).
    pub full_range: bool,
}

impl ColorSpace {
    /// BT.709 limited range: what the MP4 writer encodes with and signals in the stream.
    pub const BT709_LIMITED: ColorSpace = ColorSpace {
        matrix: YuvMatrix::Bt709,
        full_range: false,
    };

    /// BT.601 limited range: assumed for streams that do not say (as ffmpeg's swscale does).
    pub const BT601_LIMITED: ColorSpace = ColorSpace {
        matrix: YuvMatrix::Bt601,
        full_range: false,
    };

    /// The colour space signalled in the VUI of an H.264 sequence parameter set NAL unit (with
    /// its header byte); unspecified fields fall back to [`ColorSpace::BT601_LIMITED`], and
    /// `None` means the NAL unit could not be parsed.
    pub fn from_sequence_parameter_set(nal_unit: &[u8]) -> Option<ColorSpace> {
        let (video_full_range, matrix_coefficients) = parse_sequence_parameter_set_color(nal_unit)?;
        let matrix = match matrix_coefficients {
            Some(1) => YuvMatrix::Bt709,
            Some(9 | 10) => YuvMatrix::Bt2020,
            _ => YuvMatrix::Bt601,
        };
        Some(ColorSpace {
            matrix,
            full_range: video_full_range.unwrap_or(false),
        })
    }

    fn luma_scale_offset(self) -> (f32, f32) {
        if self.full_range {
            (255.0, 0.0)
        } else {
            (219.0, 16.0)
        }
    }

    fn chroma_scale(self) -> f32 {
        if self.full_range { 255.0 } else { 224.0 }
    }
}

fn to_byte(value: f32) -> u8 {
    value.round().clamp(0.0, 255.0) as u8
}

/// Converts one packed RGB frame (`height × width × 3`) to I420 planes: `y` is `width × height`,
/// `u` and `v` are `width/2 × height/2`. Chroma is sited as H.264 assumes by default (type 0,
/// MPEG-2 style): on even columns, between row pairs; each sample filters its column triple with
/// weights 1, 2, 1 (edges repeated) and averages the two rows. Width and height must be even.
pub(crate) fn rgb_to_i420(
    rgb: &[u8],
    width: usize,
    height: usize,
    color_space: ColorSpace,
    y: &mut [u8],
    u: &mut [u8],
    v: &mut [u8],
) {
    let (kr, kb) = color_space.matrix.weights();
    let kg = 1.0 - kr - kb;
    let (luma_scale, luma_offset) = color_space.luma_scale_offset();
    let luma_gain = luma_scale / 255.0;
    let chroma_gain = color_space.chroma_scale() / 255.0;
    for (luma, pixel) in y.iter_mut().zip(rgb.chunks_exact(3)) {
        let [r, g, b] = [pixel[0], pixel[1], pixel[2]].map(f32::from);
        *luma = to_byte(luma_offset + luma_gain * (kr * r + kg * g + kb * b));
    }
    let chroma_width = width / 2;
    for row in 0..height / 2 {
        for column in 0..chroma_width {
            let center = 2 * column;
            let taps = [
                (center.saturating_sub(1), 1.0),
                (center, 2.0),
                ((center + 1).min(width - 1), 1.0),
            ];
            let mut sum = [0.0f32; 3];
            for pixel_row in [2 * row, 2 * row + 1] {
                for (pixel_column, weight) in taps {
                    let offset = (pixel_row * width + pixel_column) * 3;
                    for (channel, total) in sum.iter_mut().enumerate() {
                        *total += weight * f32::from(rgb[offset + channel]);
                    }
                }
            }
            let [r, g, b] = sum.map(|total| total / 8.0);
            let luma = kr * r + kg * g + kb * b;
            u[row * chroma_width + column] =
                to_byte(128.0 + chroma_gain * (b - luma) / (2.0 * (1.0 - kb)));
            v[row * chroma_width + column] =
                to_byte(128.0 + chroma_gain * (r - luma) / (2.0 * (1.0 - kr)));
        }
    }
}

/// Converts I420 planes with the given strides to packed RGB (`height × width × 3`), upsampling
/// chroma bilinearly from H.264's default siting (type 0, see [`rgb_to_i420`]): even columns take
/// their sample, odd columns the mean of both neighbours; rows weigh the nearer sample row 3:1.
/// Edges are repeated. Width and height must be even.
pub(crate) fn i420_to_rgb(
    planes: (&[u8], &[u8], &[u8]),
    strides: (usize, usize, usize),
    width: usize,
    height: usize,
    color_space: ColorSpace,
    rgb: &mut [u8],
) {
    let (y, u, v) = planes;
    let (kr, kb) = color_space.matrix.weights();
    let kg = 1.0 - kr - kb;
    let (luma_scale, luma_offset) = color_space.luma_scale_offset();
    let luma_gain = 255.0 / luma_scale;
    let chroma_gain = 255.0 / color_space.chroma_scale();
    let (chroma_width, chroma_height) = (width / 2, height / 2);
    let upsample = |plane: &[u8], stride: usize, row: usize, column: usize| {
        let near_row = row / 2;
        let far_row = if row % 2 == 1 {
            (near_row + 1).min(chroma_height - 1)
        } else {
            near_row.saturating_sub(1)
        };
        let left = column / 2;
        let right = if column % 2 == 1 {
            (left + 1).min(chroma_width - 1)
        } else {
            left
        };
        let horizontal = |r: usize| {
            (f32::from(plane[r * stride + left]) + f32::from(plane[r * stride + right])) / 2.0
        };
        (3.0 * horizontal(near_row) + horizontal(far_row)) / 4.0
    };
    for row in 0..height {
        for column in 0..width {
            let luma = (f32::from(y[row * strides.0 + column]) - luma_offset) * luma_gain;
            let blue_difference = (upsample(u, strides.1, row, column) - 128.0) * chroma_gain;
            let red_difference = (upsample(v, strides.2, row, column) - 128.0) * chroma_gain;
            let r = luma + 2.0 * (1.0 - kr) * red_difference;
            let b = luma + 2.0 * (1.0 - kb) * blue_difference;
            let g = (luma - kr * r - kb * b) / kg;
            let offset = (row * width + column) * 3;
            rgb[offset] = to_byte(r);
            rgb[offset + 1] = to_byte(g);
            rgb[offset + 2] = to_byte(b);
        }
    }
}

/// Reads the bits of an RBSP, skipping emulation-prevention bytes (`00 00 03`).
struct BitReader<'a> {
    bytes: &'a [u8],
    byte: usize,
    bit: u8,
    zeros: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<u32> {
        if self.bit == 0 {
            if self.zeros >= 2 && self.bytes.get(self.byte) == Some(&3) {
                self.byte += 1;
                self.zeros = 0;
            }
            let value = *self.bytes.get(self.byte)?;
            self.zeros = if value == 0 { self.zeros + 1 } else { 0 };
        }
        let value = (self.bytes[self.byte] >> (7 - self.bit)) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
        }
        Some(u32::from(value))
    }

    fn bits(&mut self, count: u32) -> Option<u32> {
        (0..count).try_fold(0, |value, _| Some((value << 1) | self.bit()?))
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    fn unsigned_exp_golomb(&mut self) -> Option<u32> {
        let mut leading_zeros = 0;
        while self.bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return None;
            }
        }
        Some((1u32 << leading_zeros) - 1 + self.bits(leading_zeros)?)
    }

    fn signed_exp_golomb(&mut self) -> Option<i64> {
        let code = i64::from(self.unsigned_exp_golomb()?);
        Some(if code % 2 == 1 {
            (code + 1) / 2
        } else {
            -(code / 2)
        })
    }
}

/// `(video_full_range_flag, matrix_coefficients)` from an SPS NAL unit, each `None` when the
/// VUI does not carry it; `None` overall when the unit is not a parsable SPS.
fn parse_sequence_parameter_set_color(nal_unit: &[u8]) -> Option<(Option<bool>, Option<u32>)> {
    if nal_unit.first()? & 0x1f != 7 {
        return None;
    }
    let mut reader = BitReader {
        bytes: &nal_unit[1..],
        byte: 0,
        bit: 0,
        zeros: 0,
    };
    let profile_idc = reader.bits(8)?;
    reader.bits(16)?;
    reader.unsigned_exp_golomb()?;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        let chroma_format_idc = reader.unsigned_exp_golomb()?;
        if chroma_format_idc == 3 {
            reader.flag()?;
        }
        reader.unsigned_exp_golomb()?;
        reader.unsigned_exp_golomb()?;
        reader.flag()?;
        if reader.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for list in 0..lists {
                if reader.flag()? {
                    let size = if list < 6 { 16 } else { 64 };
                    let (mut last_scale, mut next_scale) = (8i64, 8i64);
                    for _ in 0..size {
                        if next_scale != 0 {
                            next_scale =
                                (last_scale + reader.signed_exp_golomb()? + 256).rem_euclid(256);
                        }
                        if next_scale != 0 {
                            last_scale = next_scale;
                        }
                    }
                }
            }
        }
    }
    reader.unsigned_exp_golomb()?;
    match reader.unsigned_exp_golomb()? {
        0 => {
            reader.unsigned_exp_golomb()?;
        }
        1 => {
            reader.flag()?;
            reader.signed_exp_golomb()?;
            reader.signed_exp_golomb()?;
            for _ in 0..reader.unsigned_exp_golomb()? {
                reader.signed_exp_golomb()?;
            }
        }
        _ => {}
    }
    reader.unsigned_exp_golomb()?;
    reader.flag()?;
    reader.unsigned_exp_golomb()?;
    reader.unsigned_exp_golomb()?;
    if !reader.flag()? {
        reader.flag()?;
    }
    reader.flag()?;
    if reader.flag()? {
        for _ in 0..4 {
            reader.unsigned_exp_golomb()?;
        }
    }
    if !reader.flag()? {
        return Some((None, None));
    }
    if reader.flag()? && reader.bits(8)? == 255 {
        reader.bits(32)?;
    }
    if reader.flag()? {
        reader.flag()?;
    }
    if !reader.flag()? {
        return Some((None, None));
    }
    reader.bits(3)?;
    let full_range = reader.flag()?;
    if !reader.flag()? {
        return Some((Some(full_range), None));
    }
    reader.bits(16)?;
    let matrix_coefficients = reader.bits(8)?;
    Some((Some(full_range), Some(matrix_coefficients)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_and_grey_convert_to_textbook_values() {
        let rgb = [255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0];
        let (mut y, mut u, mut v) = ([0u8; 4], [0u8; 1], [0u8; 1]);
        rgb_to_i420(
            &rgb,
            2,
            2,
            ColorSpace::BT709_LIMITED,
            &mut y,
            &mut u,
            &mut v,
        );
        assert_eq!((y[0], u[0], v[0]), (63, 102, 240));
        rgb_to_i420(
            &rgb,
            2,
            2,
            ColorSpace::BT601_LIMITED,
            &mut y,
            &mut u,
            &mut v,
        );
        assert_eq!((y[0], u[0], v[0]), (81, 90, 240));
        let white = [255u8; 12];
        rgb_to_i420(
            &white,
            2,
            2,
            ColorSpace::BT709_LIMITED,
            &mut y,
            &mut u,
            &mut v,
        );
        assert_eq!((y[0], u[0], v[0]), (235, 128, 128));
    }

    #[test]
    fn flat_colours_survive_a_round_trip_within_one_level() {
        for color_space in [
            ColorSpace::BT709_LIMITED,
            ColorSpace::BT601_LIMITED,
            ColorSpace {
                matrix: YuvMatrix::Bt2020,
                full_range: true,
            },
        ] {
            for colour in [
                [0u8, 0, 0],
                [255, 255, 255],
                [200, 30, 90],
                [12, 240, 128],
                [77, 77, 200],
            ] {
                let rgb: Vec<u8> = colour.iter().copied().cycle().take(12).collect();
                let (mut y, mut u, mut v) = ([0u8; 4], [0u8; 1], [0u8; 1]);
                rgb_to_i420(&rgb, 2, 2, color_space, &mut y, &mut u, &mut v);
                let mut back = [0u8; 12];
                i420_to_rgb((&y, &u, &v), (2, 1, 1), 2, 2, color_space, &mut back);
                for (a, b) in rgb.iter().zip(back) {
                    assert!(a.abs_diff(b) <= 2, "{color_space:?} {colour:?} -> {back:?}");
                }
            }
        }
    }

    fn pack_bits(bits: &str) -> Vec<u8> {
        let bits: Vec<u8> = bits
            .bytes()
            .filter(|b| *b != b' ')
            .map(|b| b - b'0')
            .collect();
        bits.chunks(8)
            .map(|chunk| {
                chunk
                    .iter()
                    .enumerate()
                    .fold(0, |byte, (i, bit)| byte | bit << (7 - i))
            })
            .collect()
    }

    #[test]
    fn sequence_parameter_set_colour_description_is_read() {
        let header = [0x67, 66, 0xc0, 30];
        let body = "1 1 011 010 0 00100 011 1 1 0";
        let without_vui = [&header[..], &pack_bits(&format!("{body} 0 1"))].concat();
        assert_eq!(
            parse_sequence_parameter_set_color(&without_vui),
            Some((None, None))
        );
        assert_eq!(
            ColorSpace::from_sequence_parameter_set(&without_vui),
            Some(ColorSpace::BT601_LIMITED)
        );
        let bt709 = [
            &header[..],
            &pack_bits(&format!(
                "{body} 1 0 0 1 101 0 1 00000001 00000001 00000001 0 1"
            )),
        ]
        .concat();
        assert_eq!(
            parse_sequence_parameter_set_color(&bt709),
            Some((Some(false), Some(1)))
        );
        assert_eq!(
            ColorSpace::from_sequence_parameter_set(&bt709),
            Some(ColorSpace::BT709_LIMITED)
        );
        let full_range_unspecified = [
            &header[..],
            &pack_bits(&format!("{body} 1 0 0 1 101 1 0 0 1")),
        ]
        .concat();
        assert_eq!(
            ColorSpace::from_sequence_parameter_set(&full_range_unspecified),
            Some(ColorSpace {
                matrix: YuvMatrix::Bt601,
                full_range: true
            })
        );
        assert_eq!(
            ColorSpace::from_sequence_parameter_set(&[0x68, 0xce, 0x38, 0x80]),
            None
        );
    }
}
