//go:build !unix

package keyfile

import "io/fs"

// fileOwner reports no owner: this platform has no uids, and a key file's
// owner is not checked.
func fileOwner(fs.FileInfo) (owner, self int, ok bool) { return 0, 0, false }
