//! Splicing media features into the token embeddings: every placeholder token position takes
//! the next feature vector of its kind, as transformers' `masked_scatter` does.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// `text`: (seq, hidden) embeddings of `ids`. `media`: for each placeholder token, the features
/// (n, hidden) that replace its positions in order. Returns (1, seq, hidden).
pub fn splice(text: &Tensor, ids: &[u32], media: &[(u32, Tensor)], device: &Device) -> Result<Tensor> {
    let mut table = vec![text.clone()];
    let mut next_row: Vec<u32> = Vec::with_capacity(media.len());
    let mut offset = ids.len() as u32;
    for (token, features) in media {
        let positions = ids.iter().filter(|&&t| t == *token).count();
        let n = features.dim(0)?;
        if positions != n {
            return Err(Error::Invalid(format!(
                "the prompt holds {positions} media tokens (id {token}) but the media yield {n} features"
            )));
        }
        next_row.push(offset);
        offset += n as u32;
        table.push(features.to_dtype(text.dtype())?);
    }
    // Gather from [text rows; features of each kind]: text position i reads row i.
    let rows: Vec<u32> = ids
        .iter()
        .enumerate()
        .map(|(i, t)| match media.iter().position(|(token, _)| token == t) {
            Some(k) => {
                next_row[k] += 1;
                next_row[k] - 1
            }
            None => i as u32,
        })
        .collect();
    let table = Tensor::cat(&table, 0)?;
    Ok(table.index_select(&Tensor::new(rows, device)?, 0)?.unsqueeze(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_take_features_in_order() {
        let dev = Device::Cpu;
        let text = Tensor::new(&[[0f32], [1.], [2.], [3.]], &dev).unwrap();
        let feats = Tensor::new(&[[10f32], [11.]], &dev).unwrap();
        let out = splice(&text, &[5, 9, 5, 9], &[(9, feats.clone())], &dev).unwrap();
        assert_eq!(out.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0., 10., 2., 11.]);
        let e = splice(&text, &[9, 9, 9, 5], &[(9, feats)], &dev).unwrap_err().to_string();
        assert!(e.contains("3 media tokens (id 9) but the media yield 2"), "{e}");
    }
}
