package replay

import "github.com/epochlog/epochlog/eventlog"

// ErrErased means the installation was erased (eventlog.Log.Erase): its
// data keys are shredded and its events purged, and a tombstone records
// it. Rebuild, Rekey, Migrate and Verify of it fail with it, through an
// *eventlog.ErasedError that names when the installation was erased and
// by whom. It is eventlog.ErrErased, so either name matches.
var ErrErased = eventlog.ErrErased
