//! `ocular info`: what a model folder holds.

use anyhow::Result;

use crate::common::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<()> {
    let pipeline = args.model.load()?;
    let info = pipeline.model.info();
    if args.json {
        let parts: serde_json::Map<_, _> = info.parameters.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        println!(
            "{}",
            serde_json::json!({
                "family": info.family, "model_type": info.model_type, "dtype": format!("{:?}", info.dtype).to_lowercase(),
                "device": info.device, "parameters": parts, "total_parameters": info.total_parameters(),
                "weight_bytes": info.weight_bytes(),
            })
        );
        return Ok(());
    }
    println!("family:         {}", info.family);
    println!("model_type:     {}", info.model_type);
    println!("dtype:          {:?}", info.dtype);
    println!("device:         {}", info.device);
    for (part, n) in &info.parameters {
        println!("{:<16}{:>14} parameters", format!("{part}:"), fmt_count(*n));
    }
    println!("{:<16}{:>14} parameters", "total:", fmt_count(info.total_parameters()));
    println!("memory:         {:.1} MiB of weights", info.weight_bytes() as f64 / (1024.0 * 1024.0));
    Ok(())
}

fn fmt_count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
