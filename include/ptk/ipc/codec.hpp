/// @file
/// @brief ptk::codec: how a value of type T crosses a process boundary.
#pragma once

#include <ptk/config.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace ptk {

/// @brief Thrown when bytes received from another process do not decode to a value
///        (a truncated or malformed message). The channel itself stays usable.
class codec_error : public std::runtime_error {
 public:
  /// @param what what was wrong with the bytes.
  explicit codec_error(const std::string& what) : std::runtime_error("ptk::codec: " + what) {}
};

namespace detail {
/// Throws the codec_error of a fixed-size message that has the wrong size (out of
/// line, so that a decode that fits stays small enough to inline).
[[noreturn, gnu::cold, gnu::noinline]] inline void throw_wrong_size(std::size_t expected,
                                                                    std::size_t got) {
  throw codec_error("expected " + std::to_string(expected) + " bytes, got " + std::to_string(got));
}
}  // namespace detail

/// @brief How a T is written to and read from bytes. Channels of T accept only types
///        that have a codec.
///
/// ptk provides codecs for trivially copyable types (except pointers, which mean
/// nothing in another process), std::string, and std::vector of any encodable type.
/// Specialise it for your own types:
/// @code
/// struct point { std::string label; double x, y; };
/// template <> struct ptk::codec<point> {
///   static std::size_t encoded_size(const point& p) { return 16 + p.label.size(); }
///   static void encode(const point& p, std::span<std::byte> out) {
///     std::memcpy(out.data(), &p.x, 8);
///     std::memcpy(out.data() + 8, &p.y, 8);
///     std::memcpy(out.data() + 16, p.label.data(), p.label.size());
///   }
///   static point decode(std::span<const std::byte> in) {
///     if (in.size() < 16) throw ptk::codec_error("point: too short");
///     point p;
///     std::memcpy(&p.x, in.data(), 8);
///     std::memcpy(&p.y, in.data() + 8, 8);
///     p.label.assign(reinterpret_cast<const char*>(in.data()) + 16, in.size() - 16);
///     return p;
///   }
/// };
/// @endcode
/// A codec may also declare `static constexpr std::size_t fixed_size`: every value
/// then encodes to exactly that many bytes, which lets rings and queues store values
/// in fixed slots without a length prefix.
/// @tparam T the value type.
template <class T>
struct codec {};

/// @brief Satisfied when ptk::codec of T can encode and decode a T.
template <class T>
concept encodable = std::is_same_v<T, std::remove_cvref_t<T>> &&
    requires(const T& v, std::span<std::byte> out, std::span<const std::byte> in) {
  { codec<T>::encoded_size(v) } -> std::same_as<std::size_t>;
  codec<T>::encode(v, out);
  { codec<T>::decode(in) } -> std::same_as<T>;
};

namespace detail {

template <class T>
concept has_fixed_size = requires {
  { codec<T>::fixed_size } -> std::convertible_to<std::size_t>;
};

template <class T>
inline constexpr bool bitwise_encodable =
    std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
    !std::is_reference_v<T>;

/// A readable reason when T has no codec, shown by channels' static_assert.
template <class T>
constexpr void require_encodable() {
  static_assert(encodable<T>,
                "ptk channels carry only types with a ptk::codec<T>: trivially copyable types "
                "(no pointers), std::string, std::vector of encodable types, or your own "
                "specialisation of ptk::codec<T> with encoded_size, encode and decode");
}

}  // namespace detail

/// @brief Whether every T encodes to the same number of bytes (then known as
///        ptk::codec<T>::fixed_size).
template <class T>
inline constexpr bool fixed_size_encodable = detail::has_fixed_size<T>;

/// @brief The codec of trivially copyable types: their bytes, as they are.
/// @tparam T a trivially copyable type that is not a pointer.
template <class T>
requires detail::bitwise_encodable<T>
struct codec<T> {
  /// Every T takes sizeof(T) bytes.
  static constexpr std::size_t fixed_size = sizeof(T);
  /// @return sizeof(T).
  static constexpr std::size_t encoded_size(const T&) noexcept { return sizeof(T); }
  /// Copies the bytes of `v` to `out` (at least sizeof(T) bytes).
  /// @param v the value. @param out where to write.
  static void encode(const T& v, std::span<std::byte> out) noexcept {
    std::memcpy(out.data(), &v, sizeof(T));
  }
  /// @param in exactly sizeof(T) bytes.
  /// @return the value. @throws ptk::codec_error if the size is wrong.
  static T decode(std::span<const std::byte> in) {
    if (in.size() != sizeof(T)) detail::throw_wrong_size(sizeof(T), in.size());
    T v;
    std::memcpy(&v, in.data(), sizeof(T));
    return v;
  }
};

/// @brief The codec of std::string: its characters, without a terminator.
template <>
struct codec<std::string> {
  /// @param s the string. @return its length.
  static std::size_t encoded_size(const std::string& s) noexcept { return s.size(); }
  /// @param s the string. @param out where to write its characters.
  static void encode(const std::string& s, std::span<std::byte> out) noexcept {
    if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  }
  /// @param in the characters. @return the string.
  static std::string decode(std::span<const std::byte> in) {
    return {reinterpret_cast<const char*>(in.data()), in.size()};
  }
};

/// @brief The codec of std::vector: the elements' bytes when they are bitwise
///        encodable, otherwise a count and each element with its length.
/// @tparam U an encodable element type.
/// @tparam A the allocator.
template <class U, class A>
requires encodable<U>
struct codec<std::vector<U, A>> {
  /// @param v the vector. @return how many bytes encode() writes.
  static std::size_t encoded_size(const std::vector<U, A>& v) {
    if constexpr (detail::bitwise_encodable<U>) {
      return v.size() * sizeof(U);
    } else {
      std::size_t n = sizeof(std::uint64_t);
      for (const U& e : v) n += sizeof(std::uint64_t) + codec<U>::encoded_size(e);
      return n;
    }
  }
  /// @param v the vector. @param out encoded_size(v) bytes.
  static void encode(const std::vector<U, A>& v, std::span<std::byte> out) {
    if constexpr (detail::bitwise_encodable<U>) {
      if (!v.empty()) std::memcpy(out.data(), v.data(), v.size() * sizeof(U));
    } else {
      std::byte* p = out.data();
      const std::uint64_t count = v.size();
      std::memcpy(p, &count, sizeof count);
      p += sizeof count;
      for (const U& e : v) {
        const std::uint64_t len = codec<U>::encoded_size(e);
        std::memcpy(p, &len, sizeof len);
        p += sizeof len;
        codec<U>::encode(e, std::span<std::byte>(p, static_cast<std::size_t>(len)));
        p += len;
      }
    }
  }
  /// @param in the bytes. @return the vector. @throws ptk::codec_error if malformed.
  static std::vector<U, A> decode(std::span<const std::byte> in) {
    std::vector<U, A> v;
    if constexpr (detail::bitwise_encodable<U>) {
      if (in.size() % sizeof(U) != 0) {
        throw codec_error("vector: " + std::to_string(in.size()) +
                          " bytes is not a whole number of " + std::to_string(sizeof(U)) +
                          "-byte elements");
      }
      v.resize(in.size() / sizeof(U));
      if (!v.empty()) std::memcpy(v.data(), in.data(), in.size());
    } else {
      std::uint64_t count = 0;
      if (in.size() < sizeof count) throw codec_error("vector: missing element count");
      std::memcpy(&count, in.data(), sizeof count);
      in = in.subspan(sizeof count);
      // Each element needs at least its length prefix: a count larger than that is a
      // lie, and reserving for it would let a peer make us allocate without bound.
      if (count > in.size() / sizeof(std::uint64_t)) throw codec_error("vector: count too large");
      v.reserve(static_cast<std::size_t>(count));
      for (std::uint64_t i = 0; i < count; ++i) {
        std::uint64_t len = 0;
        if (in.size() < sizeof len) throw codec_error("vector: truncated element length");
        std::memcpy(&len, in.data(), sizeof len);
        in = in.subspan(sizeof len);
        if (len > in.size()) throw codec_error("vector: element longer than the message");
        v.push_back(codec<U>::decode(in.first(static_cast<std::size_t>(len))));
        in = in.subspan(static_cast<std::size_t>(len));
      }
      if (!in.empty()) throw codec_error("vector: trailing bytes after the last element");
    }
    return v;
  }
};

}  // namespace ptk
