package mirror

// File operations that differ by platform: free space for NoSpaceError.

import "syscall"

// freeBytes is the space an unprivileged writer may still use on dir's
// file system, or -1 when it cannot be found.
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
