package exec

import (
	"os"
	"syscall"
)

// fileOwner returns a file's owning user and group.
func fileOwner(info os.FileInfo) (uid, gid uint32, ok bool) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Uid, st.Gid, true
}
