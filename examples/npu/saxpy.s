# y = 2 * x + y over 256 f32 values, on one core: a hand-written program for `anychip npu run`.
# dma_in loads x and y into the unified buffer, the vector unit computes, dma_out stores.
# The flags order the units: dma_in -> vector (flag 0), vector -> dma_out (flag 0).
.data x 0 f32 256 range        # x = 0, 1, 2, ...
.data y 1024 f32 256 range     # y = 0, 1, 2, ...
.data out 2048 f32 256 none    # the result: out[i] = 3 i
.core 0
    dma dtype=f32 dst=ub:0 src=dram:0 shape=1,1,256 dst_strides=0,256,1 src_strides=0,256,1 pad=1,1,256 pad_value=0.0
    dma dtype=f32 dst=ub:1024 src=dram:1024 shape=1,1,256 dst_strides=0,256,1 src_strides=0,256,1 pad=1,1,256 pad_value=0.0
    setf src=dma_in dst=vector flag=0
    waitf src=dma_in dst=vector flag=0
    vmuls dtype=f32 dst=ub:0 a=ub:0 imm=2.0 shape=1,256 dst_strides=256,1 a_strides=256,1
    vadd dtype=f32 dst=ub:0 a=ub:0 b=ub:1024 shape=1,256 dst_strides=256,1 a_strides=256,1 b_strides=256,1
    setf src=vector dst=dma_out flag=0
    waitf src=vector dst=dma_out flag=0
    dma dtype=f32 dst=dram:2048 src=ub:0 shape=1,1,256 dst_strides=0,256,1 src_strides=0,256,1 pad=1,1,256 pad_value=0.0
    finish
