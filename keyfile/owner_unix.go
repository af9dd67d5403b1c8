//go:build unix

package keyfile

import (
	"io/fs"
	"os"
	"syscall"
)

// fileOwner returns the uid owning the file fi describes and the
// effective uid of this process; ok is false where there are none.
func fileOwner(fi fs.FileInfo) (owner, self int, ok bool) {
	st, isUnix := fi.Sys().(*syscall.Stat_t)
	if !isUnix {
		return 0, 0, false
	}
	return int(st.Uid), os.Geteuid(), true
}
