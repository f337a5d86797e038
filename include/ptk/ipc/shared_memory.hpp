/// @file
/// @brief ptk::shared_memory: a named (/dev/shm) or anonymous (memfd) segment mapped
///        into this process.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/syscall.hpp>
#include <ptk/detail/unique_fd.hpp>
#include <ptk/error.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace ptk {

/// @brief A shared-memory segment, mapped read-write, unmapped by the destructor.
///
/// Named segments live under /dev/shm. create() makes a new one with `O_EXCL` and mode
/// 0600 and reserves its pages with posix_fallocate, so a full tmpfs is an error here
/// rather than a SIGBUS later; the creator owns the name and unlinks it in its
/// destructor (keep() opts out). open() refuses segments owned by another user or
/// readable by others. Anonymous segments come from memfd_create, sealed against
/// resizing, and reach a child as a descriptor (ptk::command::pass_fd, then
/// from_fd() in the child).
/// @code
/// auto seg = ptk::shared_memory::create("demo", 1 << 20);   // /dev/shm/demo
/// std::memcpy(seg.data(), "hi", 3);
/// auto peer = ptk::shared_memory::open("demo");              // another process
/// @endcode
class shared_memory {
 public:
  /// An empty handle (no segment).
  shared_memory() noexcept = default;

  /// Creates a new named segment of `bytes` bytes (zero-filled).
  /// @param name letters, digits, '.', '_' and '-', optionally after one leading '/'.
  /// @param bytes the size, more than zero.
  /// @return the segment, owning its name.
  /// @throws std::invalid_argument for a bad name or size; std::system_error if the
  ///         name exists (EEXIST) or the memory cannot be reserved (ENOSPC).
  static shared_memory create(std::string_view name, std::size_t bytes) {
    const std::string path = checked_name(name);
    if (bytes == 0) throw std::invalid_argument("ptk::shared_memory: size must be positive");
    const int fd = ::shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd == -1) throw_os_error(errno, "shm_open '" + path + "'");
    detail::unique_fd owned(fd);
    shared_memory s;
    s.name_ = path;
    s.owner_ = true;  // from here on, a failure unlinks the name again
    s.fd_ = std::move(owned);
    if (::fchmod(s.fd_.get(), 0600) == -1) throw_os_error(errno, "fchmod '" + path + "'");
    s.reserve(bytes, "'" + path + "'");
    s.map(bytes, "'" + path + "'");
    return s;
  }

  /// Opens an existing named segment created by this user with mode 0600.
  /// @param name the name given to create().
  /// @return the segment (not owning the name).
  /// @throws std::system_error (ENOENT if missing, EACCES for another user's or a
  ///         world-accessible segment).
  static shared_memory open(std::string_view name) {
    const std::string path = checked_name(name);
    const int fd = ::shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd == -1) throw_os_error(errno, "shm_open '" + path + "'");
    shared_memory s;
    s.fd_.reset(fd);
    s.name_ = path;
    struct stat st {};
    detail::check(::fstat(fd, &st), "fstat '" + path + "'");
    if (st.st_uid != ::geteuid()) {
      throw_os_error(EACCES, "open '" + path + "': owned by uid " + std::to_string(st.st_uid) +
                                 ", not by this user (uid " + std::to_string(::geteuid()) + ")");
    }
    if ((st.st_mode & 077) != 0) {
      const unsigned m = st.st_mode & 0777U;
      const std::string mode = {'0', static_cast<char>('0' + ((m >> 6) & 7U)),
                                static_cast<char>('0' + ((m >> 3) & 7U)),
                                static_cast<char>('0' + (m & 7U))};
      throw_os_error(
          EACCES, "open '" + path + "': accessible to other users (mode " + mode + "), want 0600");
    }
    if (st.st_size <= 0) throw_os_error(EINVAL, "open '" + path + "': empty segment");
    s.map(static_cast<std::size_t>(st.st_size), "'" + path + "'");
    return s;
  }

  /// Creates an anonymous segment (memfd), sealed against growing and shrinking.
  /// @param bytes the size, more than zero.
  /// @return the segment; pass fd() to a child and call from_fd() there.
  static shared_memory anonymous(std::size_t bytes) {
    if (bytes == 0) throw std::invalid_argument("ptk::shared_memory: size must be positive");
    const int fd = ::memfd_create("ptk", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd == -1) throw_os_error(errno, "memfd_create");
    shared_memory s;
    s.fd_.reset(fd);
    s.reserve(bytes, "memfd");
    detail::check(::fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL),
                  "seal memfd");
    s.map(bytes, "memfd");
    return s;
  }

  /// Maps the segment behind a descriptor this process received (it takes
  /// ownership of `fd`). A memfd must be sealed against shrinking, so the sender
  /// cannot make our mapping fault.
  /// @param fd a memfd or shm descriptor.
  /// @return the segment.
  static shared_memory from_fd(int fd) {
    shared_memory s;
    s.fd_.reset(fd);
    const int seals = ::fcntl(fd, F_GET_SEALS);
    if (seals != -1 && (seals & F_SEAL_SHRINK) == 0) {
      throw_os_error(EPERM,
                     "map fd " + std::to_string(fd) + ": memfd is not sealed against shrinking");
    }
    struct stat st {};
    detail::check(::fstat(fd, &st), "fstat fd " + std::to_string(fd));
    if (st.st_size <= 0) throw_os_error(EINVAL, "map fd " + std::to_string(fd) + ": empty segment");
    s.map(static_cast<std::size_t>(st.st_size), "fd " + std::to_string(fd));
    return s;
  }

  /// Removes a name from /dev/shm (mappings stay valid).
  /// @param name the segment's name. @return whether a name was removed.
  static bool remove(std::string_view name) {
    return ::shm_unlink(checked_name(name).c_str()) == 0;
  }

  /// Moves a segment. @param other the segment to move from (left empty).
  shared_memory(shared_memory&& other) noexcept { swap(other); }
  /// Moves a segment in, releasing the current one. @param other the segment.
  /// @return *this.
  shared_memory& operator=(shared_memory&& other) noexcept {
    shared_memory tmp(std::move(other));
    swap(tmp);
    return *this;
  }
  shared_memory(const shared_memory&) = delete;
  shared_memory& operator=(const shared_memory&) = delete;
  /// Unmaps; an owner also unlinks the name.
  ~shared_memory() {
    if (data_ != nullptr) ::munmap(data_, size_);
    if (owner_ && !name_.empty()) ::shm_unlink(name_.c_str());
  }

  /// @return the first byte of the mapping.
  [[nodiscard]] std::byte* data() const noexcept { return static_cast<std::byte*>(data_); }
  /// @return the size in bytes.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// @return the whole mapping as bytes.
  [[nodiscard]] std::span<std::byte> bytes() const noexcept { return {data(), size_}; }
  /// @return the descriptor (pass it to a child for anonymous segments).
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  /// @return "/name" for named segments, empty for anonymous ones.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  /// @return whether this handle unlinks the name when destroyed.
  [[nodiscard]] bool owns_name() const noexcept { return owner_; }
  /// Leaves the name in /dev/shm when this handle is destroyed.
  void keep() noexcept { owner_ = false; }
  /// @return whether a segment is mapped.
  explicit operator bool() const noexcept { return data_ != nullptr; }

 private:
  static std::string checked_name(std::string_view name) {
    if (!name.empty() && name.front() == '/') name.remove_prefix(1);
    bool ok = !name.empty() && name.size() <= 200 && name != "." && name != "..";
    for (const char c : name) {
      ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-');
    }
    if (!ok) {
      throw std::invalid_argument("ptk::shared_memory: bad name '" + std::string(name) +
                                  "' (use 1-200 letters, digits, '.', '_' or '-')");
    }
    // Not "/" + std::string(name): GCC 12 at -O3 warns (-Wrestrict, a false positive)
    // on operator+(const char*, string&&), which breaks users' -Werror builds.
    std::string path;
    path.reserve(name.size() + 1);
    path += '/';
    path += name;
    return path;
  }

  void reserve(std::size_t bytes, const std::string& what) {
    if (bytes > static_cast<std::size_t>(INT64_MAX)) throw_os_error(EFBIG, "size " + what);
    // posix_fallocate returns the error instead of setting errno.
    const int err = ::posix_fallocate(fd_.get(), 0, static_cast<off_t>(bytes));
    if (err != 0) throw_os_error(err, "reserve " + std::to_string(bytes) + " bytes for " + what);
  }

  void map(std::size_t bytes, const std::string& what) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (p == MAP_FAILED) throw_os_error(errno, "mmap " + what);
    data_ = p;
    size_ = bytes;
  }

  void swap(shared_memory& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(fd_, o.fd_);
    std::swap(name_, o.name_);
    std::swap(owner_, o.owner_);
  }

  void* data_ = nullptr;
  std::size_t size_ = 0;
  detail::unique_fd fd_;
  std::string name_;
  bool owner_ = false;
};

}  // namespace ptk
