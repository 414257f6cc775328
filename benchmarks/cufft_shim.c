/* A forwarding libcufft.so.11, for the prepared device check only (benchmarks/gpu_prepare.sh).
   ASTRA 2.5's wheel links CUDA 12's cuFFT (five entry points, symbol version libcufft.so.11);
   the GPU machine has CUDA 13's libcufft.so.12, whose C API for these five calls is the same.
   Each call is forwarded to the same-named function of libcufft.so.12 (found on
   LD_LIBRARY_PATH); 5 (CUFFT_INTERNAL_ERROR) when that library cannot be loaded. */
#include <dlfcn.h>
#include <stdio.h>

/* the cufft.h types these five signatures use */
typedef int cufftHandle;
typedef int cufftResult;
typedef int cufftType;
typedef struct { float x, y; } cufftComplex;

static void *lib;

static void *sym(const char *name) {
  if (!lib) lib = dlopen("libcufft.so.12", RTLD_NOW | RTLD_GLOBAL);
  if (!lib) {
    fprintf(stderr, "cufft shim: %s\n", dlerror());
    return 0;
  }
  return dlsym(lib, name);
}

#define FWD(name, params, args)                                        \
  cufftResult name params {                                           \
    cufftResult (*f) params = (cufftResult (*) params) sym(#name);    \
    return f ? f args : 5;                                            \
  }

FWD(cufftPlan1d, (cufftHandle *p, int nx, cufftType t, int b), (p, nx, t, b))
FWD(cufftExecR2C, (cufftHandle p, float *i, cufftComplex *o), (p, i, o))
FWD(cufftExecC2R, (cufftHandle p, cufftComplex *i, float *o), (p, i, o))
FWD(cufftDestroy, (cufftHandle p), (p))
FWD(cufftSetStream, (cufftHandle p, void *s), (p, s))
