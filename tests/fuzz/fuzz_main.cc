// The driver for fuzz harnesses built without libFuzzer (the default gcc build, for the smoke
// tests): runs every file of the corpus directories given, then `--mutations=N` deterministic
// mutations of them (bit flips, truncations, byte insertions and splices; seeded), and fails only
// by crashing, as libFuzzer would. With --config=fuzz the harnesses link libFuzzer's own main.
//
//   <harness> [--mutations=N] [--seed=S] CORPUS_DIR_OR_FILE...
#include <dirent.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

// The inputs at `path`: every file of a directory, or the file itself.
std::vector<std::string> ReadCorpus(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    std::ifstream in(dir, std::ios::binary);
    if (in)
      out.emplace_back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return out;
  }
  for (dirent* e; (e = readdir(d)) != nullptr;) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name, std::ios::binary);
    out.emplace_back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  closedir(d);
  return out;
}

uint64_t Next(uint64_t* s) {  // xorshift64*
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ull;
}

std::string Mutate(const std::vector<std::string>& corpus, uint64_t* rng) {
  std::string x = corpus[Next(rng) % corpus.size()];
  const int edits = 1 + static_cast<int>(Next(rng) % 4);
  for (int i = 0; i < edits; ++i) {
    switch (Next(rng) % 5) {
      case 0:  // flip a bit
        if (!x.empty()) x[Next(rng) % x.size()] ^= static_cast<char>(1u << (Next(rng) % 8));
        break;
      case 1:  // truncate
        if (!x.empty()) x.resize(Next(rng) % x.size());
        break;
      case 2:  // insert a byte
        x.insert(x.begin() + (x.empty() ? 0 : Next(rng) % (x.size() + 1)),
                 static_cast<char>(Next(rng)));
        break;
      case 3:  // overwrite with an interesting byte
        if (!x.empty()) {
          static const char kBytes[] = {
              0,    1,   0x7f, static_cast<char>(0x80), static_cast<char>(0xff), '0', ',',
              '\n', '{', '"'};
          x[Next(rng) % x.size()] = kBytes[Next(rng) % sizeof(kBytes)];
        }
        break;
      default: {  // splice another input's tail
        const std::string& y = corpus[Next(rng) % corpus.size()];
        if (!x.empty() && !y.empty()) {
          x = x.substr(0, Next(rng) % x.size()) + y.substr(Next(rng) % y.size());
        }
      }
    }
  }
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  long mutations = 0;
  uint64_t seed = 1;
  std::vector<std::string> corpus;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--mutations=", 0) == 0) {
      mutations = std::atol(a.c_str() + 12);
    } else if (a.rfind("--seed=", 0) == 0) {
      seed = std::strtoull(a.c_str() + 7, nullptr, 10) | 1;
    } else {
      for (std::string& input : ReadCorpus(a)) corpus.push_back(std::move(input));
    }
  }
  if (corpus.empty()) {
    std::fprintf(stderr, "usage: %s [--mutations=N] [--seed=S] CORPUS_DIR... (no inputs found)\n",
                 argv[0]);
    return 2;
  }
  for (const std::string& input : corpus) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  uint64_t rng = seed;
  for (long i = 0; i < mutations; ++i) {
    const std::string input = Mutate(corpus, &rng);
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  std::printf("%zu corpus inputs and %ld mutations ran\n", corpus.size(), mutations);
  return 0;
}
