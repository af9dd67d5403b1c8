package diskspace

import (
	"fmt"
	"syscall"
)

func exhausted(dir string, minFree uint64) error {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return nil
	}
	if st.Files > 0 && st.Ffree == 0 { // Files 0: inodes not counted
		return &Error{Dir: dir, What: fmt.Sprintf("no free inode (%d in all)", st.Files)}
	}
	if free := st.Bavail * uint64(st.Bsize); free < minFree || st.Bavail == 0 {
		return &Error{Dir: dir, What: fmt.Sprintf("%d bytes free of %d", free, st.Blocks*uint64(st.Bsize))}
	}
	return nil
}
