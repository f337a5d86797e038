/// @file
/// @brief ptk::command: what to run, where, with which environment and standard streams.
#pragma once

#include <ptk/config.hpp>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ptk {

/// @brief What a child's standard stream is connected to.
enum class stdio {
  inherit,    ///< the parent's own stream (the default)
  null,       ///< /dev/null
  pipe,       ///< a pipe the parent reads (stdout, stderr) or writes (stdin)
  to_stdout,  ///< stderr only: wherever stdout goes (2>&1)
  file,       ///< a file; made by ptk::stdio_file
  fd,         ///< an existing descriptor of the parent; made by ptk::stdio_fd
};

/// @brief How ptk::stdio_file opens its file.
enum class file_mode {
  read,      ///< for stdin: the file must exist
  truncate,  ///< for output: created if missing, emptied if present
  append,    ///< for output: created if missing, written at its end
};

/// @brief A standard stream's connection: a ::stdio mode, plus the file or the
/// descriptor for stdio::file and stdio::fd. Converts from ::stdio.
struct stdio_target {
  /// Connects to `m` (inherit, null, pipe or to_stdout).
  /// @param m the mode.
  stdio_target(stdio m = stdio::inherit) : mode(m) {}  // NOLINT(google-explicit-constructor)
  stdio mode;                                          ///< what the stream is connected to
  std::string path;                                    ///< the file, for stdio::file
  file_mode how = file_mode::read;                     ///< how the file is opened, for stdio::file
  int fd = -1;                                         ///< the parent's descriptor, for stdio::fd
  /// @param m a mode.
  /// @return whether this target is that mode.
  bool operator==(stdio m) const noexcept { return mode == m; }
};

/// @brief Connects a standard stream to a file.
///
/// @code
/// ptk::command{"make"}.std_out(ptk::stdio_file("build.log", ptk::file_mode::append))
///                     .std_err(ptk::stdio::to_stdout);
/// @endcode
/// @param path the file.
/// @param how read (for stdin), truncate or append (for stdout and stderr).
/// @return the target to pass to command::std_in / std_out / std_err.
inline stdio_target stdio_file(std::string path, file_mode how) {
  stdio_target t(stdio::file);
  t.path = std::move(path);
  t.how = how;
  return t;
}

/// @brief Connects a standard stream to an open descriptor of the parent (the child
/// gets a copy; the parent keeps its own).
/// @param fd an open descriptor.
/// @return the target to pass to command::std_in / std_out / std_err.
inline stdio_target stdio_fd(int fd) {
  stdio_target t(stdio::fd);
  t.fd = fd;
  return t;
}

/// @brief A program to run and how: arguments, working directory, environment,
/// standard streams, process group, descriptors to pass on. Built fluently.
///
/// @code
/// auto cmd = ptk::command{"ls"}.args({"-l", "/tmp"}).cwd("/tmp").env("LC_ALL", "C")
///                .std_out(ptk::stdio::pipe).std_err(ptk::stdio::null);
/// @endcode
///
/// A program name without a slash is looked up in the parent's PATH.
class command {
 public:
  /// A command running `program` with no arguments.
  /// @param program a path, or a name looked up in PATH.
  explicit command(std::string program) : program_(std::move(program)) {}

  /// Appends one argument.
  /// @param a the argument.
  /// @return `*this`.
  command& arg(std::string a) & {
    args_.push_back(std::move(a));
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param a as for the overload on an lvalue.
  /// @return the command, moved.
  command&& arg(std::string a) && { return std::move(arg(std::move(a))); }

  /// Appends arguments.
  /// @param as the arguments, in order.
  /// @return `*this`.
  command& args(std::vector<std::string> as) & {
    for (auto& a : as) args_.push_back(std::move(a));
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param as as for the overload on an lvalue.
  /// @return the command, moved.
  command&& args(std::vector<std::string> as) && { return std::move(args(std::move(as))); }

  /// Runs the child in `dir`.
  /// @param dir the working directory.
  /// @return `*this`.
  command& cwd(std::string dir) & {
    cwd_ = std::move(dir);
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param dir as for the overload on an lvalue.
  /// @return the command, moved.
  command&& cwd(std::string dir) && { return std::move(cwd(std::move(dir))); }

  /// Sets one environment variable for the child (on top of the inherited ones).
  /// @param key the variable's name.
  /// @param value its value.
  /// @return `*this`.
  command& env(std::string key, std::string value) & {
    env_[std::move(key)] = std::move(value);
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param key as for the overload on an lvalue.
  /// @param value as for the overload on an lvalue.
  /// @return the command, moved.
  command&& env(std::string key, std::string value) && {
    return std::move(env(std::move(key), std::move(value)));
  }

  /// Removes one inherited environment variable.
  /// @param key the variable's name.
  /// @return `*this`.
  command& env_remove(std::string key) & {
    env_[std::move(key)] = std::nullopt;
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param key as for the overload on an lvalue.
  /// @return the command, moved.
  command&& env_remove(std::string key) && { return std::move(env_remove(std::move(key))); }

  /// Starts from an empty environment instead of the parent's.
  /// @return `*this`.
  command& env_clear() & {
    inherit_env_ = false;
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @return the command, moved.
  command&& env_clear() && { return std::move(env_clear()); }

  /// Connects the child's standard input.
  /// @param s inherit, null, pipe, a file (ptk::stdio_file) or a descriptor (ptk::stdio_fd).
  /// @return `*this`.
  command& std_in(stdio_target s) & {
    in_ = std::move(s);
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param s as for the overload on an lvalue.
  /// @return the command, moved.
  command&& std_in(stdio_target s) && { return std::move(std_in(std::move(s))); }

  /// Connects the child's standard output.
  /// @param s inherit, null, pipe, a file (ptk::stdio_file) or a descriptor (ptk::stdio_fd).
  /// @return `*this`.
  command& std_out(stdio_target s) & {
    out_ = std::move(s);
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param s as for the overload on an lvalue.
  /// @return the command, moved.
  command&& std_out(stdio_target s) && { return std::move(std_out(std::move(s))); }

  /// Connects the child's standard error.
  /// @param s inherit, null, pipe, to_stdout (2>&1), a file or a descriptor.
  /// @return `*this`.
  command& std_err(stdio_target s) & {
    err_ = std::move(s);
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param s as for the overload on an lvalue.
  /// @return the command, moved.
  command&& std_err(stdio_target s) && { return std::move(std_err(std::move(s))); }

  /// Makes the child the leader of a new process group, so process::kill_tree() can
  /// signal it and everything it starts at once, and a terminal's Ctrl-C does not
  /// reach it.
  /// @param on whether to start a new group.
  /// @return `*this`.
  command& new_process_group(bool on = true) & {
    new_group_ = on;
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param on as for the overload on an lvalue.
  /// @return the command, moved.
  command&& new_process_group(bool on = true) && { return std::move(new_process_group(on)); }

  /// Starts the child in a new session (setsid): no controlling terminal, and it
  /// leads a new process group too, so process::kill_tree() reaches its whole tree.
  /// @param on whether to start a new session.
  /// @return `*this`.
  command& new_session(bool on = true) & {
    new_session_ = on;
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param on as for the overload on an lvalue.
  /// @return the command, moved.
  command&& new_session(bool on = true) && { return std::move(new_session(on)); }

  /// Asks the kernel to send `sig` to the child when its parent dies (Linux's
  /// PR_SET_PDEATHSIG), so a supervisor that crashes or is killed takes its workers
  /// with it instead of leaving orphans behind.
  ///
  /// @code
  /// auto worker = ptk::spawn(ptk::command{"worker"}.parent_death_signal(SIGKILL));
  /// @endcode
  ///
  /// Caveats, from the kernel's definition:
  /// - the "parent" is the *thread* that called ptk::spawn: if that thread exits, the
  ///   child gets the signal even though the process lives on. Spawn from a thread
  ///   that lives as long as the children should (the main thread, a supervisor
  ///   thread), not from a short-lived or pool thread that may be retired;
  /// - the setting survives exec, but is cleared when the child execs a set-user-ID
  ///   or set-group-ID program, and it is not inherited by the child's own children.
  ///
  /// Needs ptk's clone3 spawn path (x86-64, Linux 5.9+); where ptk falls back to
  /// posix_spawn, ptk::spawn throws std::system_error with ENOSYS for such a command.
  /// The race with a parent dying during the spawn is closed: the child checks its
  /// parent after setting the signal and signals itself if the parent is already gone.
  /// @param sig the signal, e.g. SIGKILL or SIGTERM; 0 turns the option off.
  /// @return `*this`.
  command& parent_death_signal(int sig) & {
    death_signal_ = sig;
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param sig as for the overload on an lvalue.
  /// @return the command, moved.
  command&& parent_death_signal(int sig) && { return std::move(parent_death_signal(sig)); }

  /// Passes the parent's descriptor `parent_fd` to the child as descriptor
  /// `child_fd` (3 or more). Every other descriptor above 2 is closed in the child.
  /// @param parent_fd an open descriptor of the parent.
  /// @param child_fd the number it gets in the child.
  /// @return `*this`.
  command& pass_fd(int parent_fd, int child_fd) & {
    pass_.emplace_back(parent_fd, child_fd);
    return *this;
  }
  /// The same, on a temporary: lets a chain start from `ptk::command{...}`.
  /// @param parent_fd as for the overload on an lvalue.
  /// @param child_fd as for the overload on an lvalue.
  /// @return the command, moved.
  command&& pass_fd(int parent_fd, int child_fd) && {
    return std::move(pass_fd(parent_fd, child_fd));
  }

  /// @return the program.
  [[nodiscard]] const std::string& program() const noexcept { return program_; }
  /// @return the arguments after the program.
  [[nodiscard]] const std::vector<std::string>& arguments() const noexcept { return args_; }
  /// @return the working directory, if set.
  [[nodiscard]] const std::optional<std::string>& working_directory() const noexcept {
    return cwd_;
  }
  /// @return variables to set (a value) or remove (nullopt).
  [[nodiscard]] const std::map<std::string, std::optional<std::string>>& environment_changes()
      const noexcept {
    return env_;
  }
  /// @return whether the child starts from the parent's environment.
  [[nodiscard]] bool inherits_environment() const noexcept { return inherit_env_; }
  /// @return how stdin is connected.
  [[nodiscard]] const stdio_target& stdin_mode() const noexcept { return in_; }
  /// @return how stdout is connected.
  [[nodiscard]] const stdio_target& stdout_mode() const noexcept { return out_; }
  /// @return how stderr is connected.
  [[nodiscard]] const stdio_target& stderr_mode() const noexcept { return err_; }
  /// @return whether the child starts a new session.
  [[nodiscard]] bool starts_session() const noexcept { return new_session_; }
  /// @return whether the child leads a new process group.
  [[nodiscard]] bool starts_process_group() const noexcept { return new_group_; }
  /// @return the signal the child gets when its parent thread dies, 0 for none.
  [[nodiscard]] int death_signal() const noexcept { return death_signal_; }
  /// @return the descriptors passed on, as (parent's, child's) pairs.
  [[nodiscard]] const std::vector<std::pair<int, int>>& passed_fds() const noexcept {
    return pass_;
  }

 private:
  std::string program_;
  std::vector<std::string> args_;
  std::optional<std::string> cwd_;
  std::map<std::string, std::optional<std::string>> env_;
  bool inherit_env_ = true;
  stdio_target in_;
  stdio_target out_;
  stdio_target err_;
  bool new_group_ = false;
  bool new_session_ = false;
  int death_signal_ = 0;
  std::vector<std::pair<int, int>> pass_;
};

}  // namespace ptk
