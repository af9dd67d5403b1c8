package mls

import "github.com/epochlog/epochlog/mls/treemath"

// LeafIndex is the index of a leaf among the leaves of a ratchet tree.
type LeafIndex = treemath.LeafIndex

// NodeIndex is the index of a node in the array representation of a
// ratchet tree (leaf i at node 2i).
type NodeIndex = treemath.NodeIndex
