// Command lab-csi-hostpath is the lab's CSI driver with snapshots (issue 18 item 4; docs/lab.md "Volume snapshots"):
// csi-driver-host-path and node-driver-registrar are not served by the Go module proxy, so the lab has its own,
// for one node. A volume is a directory under --state-dir/volumes, published by a bind mount; a snapshot is a copy
// of it under --state-dir/snapshots (for CNPG's online snapshot, taken between pg_backup_start and pg_backup_stop, a
// file copy is a base backup that WAL replay makes consistent), and a volume created from a snapshot is a copy of
// that. With --registration-dir (kubelet's <root-dir>/plugins_registry) it registers itself with kubelet, serving
// the plugin-registration API that node-driver-registrar would. It runs as a lab process in the host's mount
// namespace, like kubelet, so its mounts need no propagation.
//
// Not yet run on the lab: the next step wires it (and the sidecars) into operator mode.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

var version = "dev"

// idPattern: volume and snapshot ids are the names the sidecars give (pvc-<uid>, snapshot-<uid>): one path segment.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

type driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer
	name, nodeID, stateDir, endpoint string
	mu                               sync.Mutex // one change at a time: copies are not concurrent-safe per id
}

func (d *driver) volumeDir(id string) string   { return filepath.Join(d.stateDir, "volumes", id) }
func (d *driver) snapshotDir(id string) string { return filepath.Join(d.stateDir, "snapshots", id) }

func checkID(kind, id string) error {
	if !idPattern.MatchString(id) {
		return status.Errorf(codes.InvalidArgument, "%s id %q is not a single path segment of [A-Za-z0-9._-]", kind, id)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// copyTree copies src's content into dst (created), keeping owners, modes and times; via a temporary sibling so
// that a failed copy leaves nothing behind.
func copyTree(src, dst string) error {
	tmp := dst + ".partial"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", src+"/.", tmp).CombinedOutput(); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("cp -a %s %s: %v: %s", src, tmp, err, strings.TrimSpace(string(out)))
	}
	return os.Rename(tmp, dst)
}

func treeSize(dir string) int64 {
	var size int64
	_ = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			size += info.Size()
		}
		return nil
	})
	return size
}

// -- identity ---------------------------------------------------------------------------------------------------------
func (d *driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.name, VendorVersion: version}, nil
}

func (d *driver) GetPluginCapabilities(
	context.Context, *csi.GetPluginCapabilitiesRequest,
) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{
		Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{
			Type: csi.PluginCapability_Service_CONTROLLER_SERVICE,
		}},
	}}}, nil
}

func (d *driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

// -- controller -------------------------------------------------------------------------------------------------------
func controllerCapability(c csi.ControllerServiceCapability_RPC_Type) *csi.ControllerServiceCapability {
	return &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
		Rpc: &csi.ControllerServiceCapability_RPC{Type: c},
	}}
}

func (d *driver) ControllerGetCapabilities(
	context.Context, *csi.ControllerGetCapabilitiesRequest,
) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{
		controllerCapability(csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME),
		controllerCapability(csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT),
	}}, nil
}

func (d *driver) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	id := req.GetName()
	if err := checkID("volume", id); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	dir := d.volumeDir(id)
	source := req.GetVolumeContentSource()
	if !exists(dir) {
		var err error
		switch {
		case source == nil:
			err = os.MkdirAll(dir, 0o777)
		case source.GetSnapshot() != nil:
			snap := source.GetSnapshot().GetSnapshotId()
			if err = checkID("snapshot", snap); err != nil {
				return nil, err
			}
			if !exists(d.snapshotDir(snap)) {
				return nil, status.Errorf(codes.NotFound, "snapshot %s does not exist", snap)
			}
			err = copyTree(d.snapshotDir(snap), dir)
		default:
			return nil, status.Error(codes.InvalidArgument, "only snapshots are supported as a volume's content source")
		}
		if err != nil {
			return nil, status.Errorf(codes.Internal, "creating volume %s: %v", id, err)
		}
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      id,
		CapacityBytes: req.GetCapacityRange().GetRequiredBytes(),
		ContentSource: source,
	}}, nil
}

func (d *driver) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if err := checkID("volume", req.GetVolumeId()); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.RemoveAll(d.volumeDir(req.GetVolumeId())); err != nil {
		return nil, status.Errorf(codes.Internal, "deleting volume %s: %v", req.GetVolumeId(), err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (d *driver) ValidateVolumeCapabilities(
	_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest,
) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if !exists(d.volumeDir(req.GetVolumeId())) {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", req.GetVolumeId())
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeCapabilities: req.GetVolumeCapabilities(),
	}}, nil
}

func (d *driver) CreateSnapshot(_ context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	id, source := req.GetName(), req.GetSourceVolumeId()
	if err := checkID("snapshot", id); err != nil {
		return nil, err
	}
	if err := checkID("volume", source); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	dir := d.snapshotDir(id)
	if !exists(dir) {
		if !exists(d.volumeDir(source)) {
			return nil, status.Errorf(codes.NotFound, "volume %s does not exist", source)
		}
		if err := copyTree(d.volumeDir(source), dir); err != nil {
			return nil, status.Errorf(codes.Internal, "snapshot %s of volume %s: %v", id, source, err)
		}
		// the source volume it was taken of, for a repeated request
		if err := os.WriteFile(dir+".source", []byte(source), 0o600); err != nil {
			return nil, status.Errorf(codes.Internal, "snapshot %s: %v", id, err)
		}
	} else if recorded, err := os.ReadFile(dir + ".source"); err == nil && string(recorded) != source {
		return nil, status.Errorf(codes.AlreadyExists, "snapshot %s exists of volume %s", id, recorded)
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "snapshot %s: %v", id, err)
	}
	return &csi.CreateSnapshotResponse{Snapshot: &csi.Snapshot{
		SnapshotId:     id,
		SourceVolumeId: source,
		SizeBytes:      treeSize(dir),
		CreationTime:   timestamppb.New(info.ModTime()),
		ReadyToUse:     true,
	}}, nil
}

func (d *driver) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if err := checkID("snapshot", id); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.RemoveAll(d.snapshotDir(id)); err != nil {
		return nil, status.Errorf(codes.Internal, "deleting snapshot %s: %v", id, err)
	}
	_ = os.Remove(d.snapshotDir(id) + ".source")
	return &csi.DeleteSnapshotResponse{}, nil
}

// -- node -------------------------------------------------------------------------------------------------------------
func (d *driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.nodeID}, nil
}

func (d *driver) NodeGetCapabilities(
	context.Context, *csi.NodeGetCapabilitiesRequest,
) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

// mounted: whether path is a mount point (its device differs from its parent's, or it is a bind of a directory on
// the same device: then /proc/self/mountinfo lists it).
func mounted(path string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && fields[4] == path {
			return true
		}
	}
	return false
}

func (d *driver) NodePublishVolume(
	_ context.Context, req *csi.NodePublishVolumeRequest,
) (*csi.NodePublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if err := checkID("volume", id); err != nil {
		return nil, err
	}
	if target == "" || req.GetVolumeCapability().GetBlock() != nil {
		return nil, status.Error(codes.InvalidArgument, "a target path and a filesystem volume are required")
	}
	src := d.volumeDir(id)
	if !exists(src) {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", id)
	}
	if mounted(target) {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "creating %s: %v", target, err)
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return nil, status.Errorf(codes.Internal, "bind mount of %s on %s: %v", src, target, err)
	}
	if req.GetReadonly() {
		flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
		if err := unix.Mount("", target, "", flags, ""); err != nil {
			_ = unix.Unmount(target, 0)
			return nil, status.Errorf(codes.Internal, "read-only remount of %s: %v", target, err)
		}
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (d *driver) NodeUnpublishVolume(
	_ context.Context, req *csi.NodeUnpublishVolumeRequest,
) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if target == "" {
		return nil, status.Error(codes.InvalidArgument, "a target path is required")
	}
	if mounted(target) {
		if err := unix.Unmount(target, 0); err != nil {
			return nil, status.Errorf(codes.Internal, "unmounting %s: %v", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !os.IsNotExist(err) {
		return nil, status.Errorf(codes.Internal, "removing %s: %v", target, err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// -- kubelet plugin registration (what node-driver-registrar serves) ---------------------------------------------------
type registration struct {
	registerapi.UnimplementedRegistrationServer
	name, endpoint string
}

func (r *registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.name,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registration) NotifyRegistrationStatus(
	_ context.Context, st *registerapi.RegistrationStatus,
) (*registerapi.RegistrationStatusResponse, error) {
	if !st.PluginRegistered {
		log.Printf("kubelet refused the registration of %s: %s", r.name, st.Error)
	} else {
		log.Printf("registered with kubelet as %s", r.name)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	_ = os.Remove(path) // a socket a killed run left
	return net.Listen("unix", path)
}

func main() {
	d := &driver{}
	var registrationDir string
	flag.StringVar(&d.name, "driver-name", "hostpath.lab.hanzo.kms", "the CSI driver's name (CSIDriver, StorageClass provisioner)")
	flag.StringVar(&d.nodeID, "node-id", "", "the node's name (required)")
	flag.StringVar(&d.stateDir, "state-dir", "", "directory of the volumes and snapshots (required)")
	flag.StringVar(&d.endpoint, "endpoint", "", "path of the CSI socket (required)")
	flag.StringVar(&registrationDir, "registration-dir", "", "kubelet's plugins_registry directory; empty: no registration")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(os.Args[0], version)
		return
	}
	if d.nodeID == "" || d.stateDir == "" || d.endpoint == "" {
		log.Fatal("--node-id, --state-dir and --endpoint are required")
	}
	for _, sub := range []string{"volumes", "snapshots"} {
		if err := os.MkdirAll(filepath.Join(d.stateDir, sub), 0o750); err != nil {
			log.Fatal(err)
		}
	}
	csiListener, err := listen(d.endpoint)
	if err != nil {
		log.Fatalf("CSI socket %s: %v", d.endpoint, err)
	}
	server := grpc.NewServer()
	csi.RegisterIdentityServer(server, d)
	csi.RegisterControllerServer(server, d)
	csi.RegisterNodeServer(server, d)
	go func() { log.Fatal(server.Serve(csiListener)) }()
	var registrar *grpc.Server
	if registrationDir != "" {
		regListener, err := listen(filepath.Join(registrationDir, d.name+"-reg.sock"))
		if err != nil {
			log.Fatalf("registration socket: %v", err)
		}
		registrar = grpc.NewServer()
		registerapi.RegisterRegistrationServer(registrar, &registration{name: d.name, endpoint: d.endpoint})
		go func() { log.Fatal(registrar.Serve(regListener)) }()
	}
	log.Printf("%s %s serving %s (node %s, state %s)", d.name, version, d.endpoint, d.nodeID, d.stateDir)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	if registrar != nil {
		registrar.Stop()
	}
	done := make(chan struct{})
	go func() { server.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		server.Stop()
	}
}
