//! Token trees: sequences that share a prefix, and many of them, in one forward pass.
//!
//! A multiple-choice document is a context and its continuations. As a tree, the
//! context is the trunk and each continuation a branch from the context's last token.
//! Every node attends to itself and its ancestors only, at the position of its depth,
//! so a branch sees what it would see in a forward pass over context + continuation,
//! and the context runs once for all branches. A row of a batch is a forest: several
//! trees one after another ([`TokenTree::append`]), each with its own roots at depth 0,
//! so short documents share a row instead of each padding one. Rows are right-padded
//! with nodes that attend only to themselves, so that a pass reads the weights once for
//! many documents where one document alone is too small to use the GEMMs well.
//!
//! A tree's result does not depend on its neighbours beyond float rounding: what its
//! neighbours add to a row is masked, but it changes where the vectorised softmax sums
//! split. `tests` measure the bound.

use candle_core::{DType, Device, Result, Tensor};

/// Tokens with a parent each (`None`: a root). Parents come before their children.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenTree {
    tokens: Vec<u32>,
    parents: Vec<Option<usize>>,
    depths: Vec<usize>,
}

impl TokenTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `tokens` as a chain under `parent` (`None`: a new root); returns the
    /// node of each token, in order.
    pub fn push_chain(&mut self, parent: Option<usize>, tokens: &[u32]) -> Vec<usize> {
        let mut above = parent.filter(|&p| p < self.tokens.len());
        let mut nodes = Vec::with_capacity(tokens.len());
        for &token in tokens {
            let depth = above.map_or(0, |p| self.depths[p] + 1);
            nodes.push(self.tokens.len());
            self.tokens.push(token);
            self.parents.push(above);
            self.depths.push(depth);
            above = nodes.last().copied();
        }
        nodes
    }

    /// Appends `other`'s nodes after this tree's, as a forest: `other`'s roots stay
    /// roots, at depth 0, and see nothing of this tree. Returns the offset of `other`'s
    /// nodes here: its node `n` is node `offset + n`.
    pub fn append(&mut self, other: &TokenTree) -> usize {
        let offset = self.len();
        self.tokens.extend_from_slice(&other.tokens);
        self.parents
            .extend(other.parents.iter().map(|p| p.map(|p| p + offset)));
        self.depths.extend_from_slice(&other.depths);
        offset
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when the tree has no node.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The position (depth) of each node.
    pub(crate) fn positions(&self) -> &[usize] {
        &self.depths
    }

    /// The nodes node `i` attends to: itself, then its ancestors within `window`
    /// positions.
    fn visible(&self, i: usize, window: Option<usize>) -> Vec<usize> {
        let mut seen = vec![i];
        let mut at = self.parents[i];
        while let Some(p) = at {
            if window.is_some_and(|w| self.depths[i] - self.depths[p] >= w) {
                break;
            }
            seen.push(p);
            at = self.parents[p];
        }
        seen
    }
}

/// Trees padded into one batch: token ids `[rows, len]`, positions `[rows * len]`.
pub(crate) struct TreeBatch<'a> {
    trees: &'a [&'a TokenTree],
    /// The longest tree's node count: the padded length of every row.
    pub(crate) len: usize,
}

impl<'a> TreeBatch<'a> {
    pub(crate) fn new(trees: &'a [&'a TokenTree]) -> Self {
        let len = trees.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
        Self { trees, len }
    }

    pub(crate) fn rows(&self) -> usize {
        self.trees.len()
    }

    /// Token ids `[rows, len]`; padding is token 0.
    pub(crate) fn ids(&self, dev: &Device) -> Result<Tensor> {
        let mut ids = Vec::with_capacity(self.rows() * self.len);
        for tree in self.trees {
            ids.extend_from_slice(&tree.tokens);
            ids.resize(ids.len() + self.len - tree.len(), 0);
        }
        Tensor::from_vec(ids, (self.rows(), self.len), dev)
    }

    /// Every node's position, row after row; padding sits at position 0.
    pub(crate) fn positions(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.rows() * self.len);
        for tree in self.trees {
            out.extend(tree.positions().iter().map(|&p| p as u32));
            out.resize(out.len() + self.len - tree.len(), 0);
        }
        out
    }

    /// Masks `[rows, 1, 1, len, len]`: 0 where a node sees a node (itself, its
    /// ancestors within `window` positions), -inf elsewhere. Padding sees itself.
    pub(crate) fn mask(&self, window: Option<usize>, dtype: DType, dev: &Device) -> Result<Tensor> {
        let t = self.len;
        let mut data = vec![f32::NEG_INFINITY; self.rows() * t * t];
        for (r, tree) in self.trees.iter().enumerate() {
            let block = &mut data[r * t * t..(r + 1) * t * t];
            for i in 0..tree.len() {
                for j in tree.visible(i, window) {
                    block[i * t + j] = 0.0;
                }
            }
            for i in tree.len()..t {
                block[i * t + i] = 0.0;
            }
        }
        Tensor::from_vec(data, (self.rows(), 1, 1, t, t), dev)?.to_dtype(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_see_the_trunk_and_themselves_only() {
        let mut tree = TokenTree::new();
        let trunk = tree.push_chain(None, &[5, 6, 7]);
        let a = tree.push_chain(trunk.last().copied(), &[8, 9]);
        let b = tree.push_chain(trunk.last().copied(), &[10]);
        assert_eq!(tree.positions(), &[0, 1, 2, 3, 4, 3]);
        assert_eq!(tree.visible(b[0], None), vec![5, 2, 1, 0]);
        assert_eq!(tree.visible(a[1], None), vec![4, 3, 2, 1, 0]);
        assert_eq!(tree.visible(a[1], Some(2)), vec![4, 3]);
        let empty = TokenTree::new();
        let trees = [&tree, &empty];
        let batch = TreeBatch::new(&trees);
        let mask: Vec<f32> = batch
            .mask(None, DType::F32, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let seen = |r: usize, i: usize, j: usize| mask[r * 36 + i * 6 + j] == 0.0;
        assert!(seen(0, 5, 2) && !seen(0, 5, 3) && !seen(0, 5, 4) && seen(0, 5, 5));
        assert!(seen(0, 4, 3) && !seen(0, 2, 3));
        // The empty row is all padding: each node sees itself, so no row is all -inf.
        assert!((0..6).all(|i| seen(1, i, i) && (0..6).filter(|&j| seen(1, i, j)).count() == 1));
        assert_eq!(batch.positions()[6..], [0; 6]);
    }

    #[test]
    fn appended_trees_are_a_forest_that_does_not_see_across() {
        let mut first = TokenTree::new();
        let trunk = first.push_chain(None, &[1, 2]);
        first.push_chain(trunk.last().copied(), &[3]);
        let mut second = TokenTree::new();
        let trunk = second.push_chain(None, &[4, 5, 6]);
        second.push_chain(Some(trunk[1]), &[7]);
        let mut row = first.clone();
        let offset = row.append(&second);
        assert_eq!(offset, 3);
        assert_eq!(row.positions(), &[0, 1, 2, 0, 1, 2, 2]);
        // Every node of the second tree sees exactly what it saw alone, shifted.
        for n in 0..second.len() {
            let alone: Vec<usize> = second.visible(n, None).iter().map(|j| j + offset).collect();
            assert_eq!(row.visible(n + offset, None), alone);
        }
        assert_eq!(row.visible(2, None), first.visible(2, None));
        assert_eq!(row.append(&TokenTree::new()), 7);
    }
}
