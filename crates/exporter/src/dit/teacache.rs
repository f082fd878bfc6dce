//! TeaCache's element-wise graphs: the residual the blocks added, and its reuse. They run where
//! the tokens are, so a skipped pass never moves the residual stream off the GPU.

use skyreels_contract::DitConfig;
use skyreels_graph::Graph;

use super::io::{Port, teacache_residual_ports, teacache_reuse_ports};
use crate::error::Result;

/// Which of the two graphs.
#[derive(Clone, Copy)]
pub(super) enum TeaCacheGraph {
    /// `teacache_residual = block_tokens − patch_tokens`.
    Residual,
    /// `block_tokens = patch_tokens + teacache_residual`.
    Reuse,
}

impl TeaCacheGraph {
    /// The graph's ports.
    pub(super) fn ports(self, config: &DitConfig) -> (Vec<Port>, Vec<Port>) {
        match self {
            TeaCacheGraph::Residual => teacache_residual_ports(config),
            TeaCacheGraph::Reuse => teacache_reuse_ports(config),
        }
    }

    /// Builds the graph into `graph`.
    pub(super) fn build(self, graph: &mut Graph, config: &DitConfig) -> Result<()> {
        let (inputs, outputs) = self.ports(config);
        let mut values = Vec::new();
        for port in inputs {
            values.push(graph.input(port.name, port.dtype, port.shape)?);
        }
        let result = match self {
            TeaCacheGraph::Residual => graph.sub(&values[0], &values[1])?,
            TeaCacheGraph::Reuse => graph.add(&values[0], &values[1])?,
        };
        let out = &outputs[0];
        graph.output(out.name, &result, out.dtype, out.shape.clone())?;
        Ok(())
    }
}
