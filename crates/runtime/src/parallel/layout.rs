//! Which rank does what. With `--cfg-parallel`, ranks `0 … d-1` run the conditional branch and
//! `d … 2d-1` the unconditional one (`d` = Ulysses degree); rank `i` and `d + i` hold the same
//! token slice and form a two-rank guidance pair. Every rank samples: after each forward the pair
//! all-gathers its two velocities (conditional first) and both combine them with the same
//! arithmetic, so latents stay identical on all ranks and only rank 0 writes the output. Without
//! `--cfg-parallel` each rank runs both branches one after the other on its token slice.
//! TeaCache keeps each branch's state on the ranks of that branch; the skip decision of a
//! Ulysses group is rank 0's, broadcast ([`agree`]), so no rank skips a collective others run.

use std::ops::Range;

use super::communicator::Communicator;
use super::config::ParallelConfig;
use super::error::Result;
use crate::teacache::Branch;

/// The guidance branches a rank computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branches {
    /// Both, one after the other (no `--cfg-parallel`).
    Both,
    /// Only this one (`--cfg-parallel`).
    Only(Branch),
}

/// A rank's place in the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankRole {
    /// Global rank.
    pub rank: usize,
    /// Branches this rank computes.
    pub branches: Branches,
    /// Index in the Ulysses group: selects the token slice.
    pub ulysses_rank: usize,
    /// Global ranks of this rank's Ulysses group.
    pub ulysses_group: Range<usize>,
    /// The rank holding the same tokens for the other branch (`--cfg-parallel`).
    pub guidance_peer: Option<usize>,
}

impl RankRole {
    /// Color for [`Communicator::split`] into Ulysses groups (one per branch group).
    pub fn ulysses_color(&self) -> usize {
        self.ulysses_group.start
    }

    /// Color for [`Communicator::split`] into guidance pairs (one per token slice).
    pub fn guidance_color(&self) -> usize {
        self.ulysses_rank
    }

    /// Whether this rank writes the output (global rank 0).
    pub fn writes_output(&self) -> bool {
        self.rank == 0
    }
}

impl ParallelConfig {
    /// The role of global `rank`.
    pub fn role(&self, rank: usize) -> RankRole {
        assert!(rank < self.world_size());
        let degree = self.ulysses_degree;
        let group = rank / degree;
        let ulysses_rank = rank % degree;
        let (branches, guidance_peer) = match (self.cfg_parallel, group) {
            (false, _) => (Branches::Both, None),
            (true, 0) => (
                Branches::Only(Branch::Conditional),
                Some(degree + ulysses_rank),
            ),
            (true, _) => (Branches::Only(Branch::Unconditional), Some(ulysses_rank)),
        };
        RankRole {
            rank,
            branches,
            ulysses_rank,
            ulysses_group: group * degree..(group + 1) * degree,
            guidance_peer,
        }
    }
}

/// Classifier-free guidance `u + scale·(c − u)`, element by element (the sampler's formula).
pub fn combine_guidance(conditional: &[f32], unconditional: &[f32], scale: f32) -> Vec<f32> {
    conditional
        .iter()
        .zip(unconditional)
        .map(|(c, u)| u + scale * (c - u))
        .collect()
}

/// Collective over a Ulysses group: every rank gets rank 0's `decision` (TeaCache's compute or
/// skip), so the group runs the same collectives even if probes differed in the last bit.
pub fn agree<C: Communicator>(
    communicator: &mut C,
    buffer: &mut C::Buffer,
    decision: bool,
) -> Result<bool> {
    communicator.write(buffer, &[u8::from(decision)])?;
    communicator.broadcast(buffer, 1, 0)?;
    let mut byte = [0u8];
    communicator.read(buffer, &mut byte)?;
    Ok(byte[0] != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::config::ParallelArgs;

    fn config(degree: usize, cfg: bool) -> ParallelConfig {
        ParallelConfig::new(&ParallelArgs {
            ulysses_degree: degree,
            cfg_parallel: cfg,
            devices: None,
        })
        .unwrap()
    }

    #[test]
    fn cfg_parallel_puts_the_branches_on_two_groups_with_paired_slices() {
        let layout = config(2, true);
        let roles: Vec<RankRole> = (0..4).map(|r| layout.role(r)).collect();
        assert_eq!(
            roles[1],
            RankRole {
                rank: 1,
                branches: Branches::Only(Branch::Conditional),
                ulysses_rank: 1,
                ulysses_group: 0..2,
                guidance_peer: Some(3),
            }
        );
        assert_eq!(
            roles[2],
            RankRole {
                rank: 2,
                branches: Branches::Only(Branch::Unconditional),
                ulysses_rank: 0,
                ulysses_group: 2..4,
                guidance_peer: Some(0),
            }
        );
        let colors: Vec<(usize, usize)> = roles
            .iter()
            .map(|r| (r.ulysses_color(), r.guidance_color()))
            .collect();
        assert_eq!(colors, vec![(0, 0), (0, 1), (2, 0), (2, 1)]);
        assert!(roles[0].writes_output() && !roles[2].writes_output());
    }

    #[test]
    fn without_cfg_parallel_every_rank_runs_both_branches() {
        let layout = config(4, false);
        for rank in 0..4 {
            let role = layout.role(rank);
            assert_eq!(role.branches, Branches::Both);
            assert_eq!(role.ulysses_group, 0..4);
            assert_eq!(role.guidance_peer, None);
        }
    }

    #[test]
    fn guidance_is_the_samplers_formula() {
        assert_eq!(
            combine_guidance(&[1.0, 2.0], &[0.5, 2.0], 6.0),
            vec![3.5, 2.0]
        );
    }
}
