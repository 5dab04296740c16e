# gemm for design 'edge', shape 100,70,200
# anychip npu program
.data a 0 f16 100,200 random
.data b 40000 f16 200,70 random
.data c 68032 f32 100,70 none
.core 0
    dma dtype=f16 dst=l0a:0 src=dram:0 shape=1,64,96 dst_strides=0,96,1 src_strides=0,200,1 pad=1,64,96 pad_value=0.0
    dma dtype=f16 dst=l0b:0 src=dram:40000 shape=1,96,70 dst_strides=0,80,1 src_strides=0,70,1 pad=1,96,80 pad_value=0.0
    setf src=dma_in dst=matrix flag=0
    dma dtype=f16 dst=l0a:12288 src=dram:192 shape=1,64,96 dst_strides=0,96,1 src_strides=0,200,1 pad=1,64,96 pad_value=0.0
    dma dtype=f16 dst=l0b:15360 src=dram:53440 shape=1,96,70 dst_strides=0,80,1 src_strides=0,70,1 pad=1,96,80 pad_value=0.0
    setf src=dma_in dst=matrix flag=0
    waitf src=dma_in dst=matrix flag=0
    mma dtype=f16 acc=l0c:0 a=l0a:0 b=l0b:0 m=64 n=80 k=96 accumulate=0 trans_b=0
    setf src=matrix dst=dma_in flag=0
    waitf src=matrix dst=dma_in flag=0
    dma dtype=f16 dst=l0a:0 src=dram:384 shape=1,64,8 dst_strides=0,16,1 src_strides=0,200,1 pad=1,64,16 pad_value=0.0
    dma dtype=f16 dst=l0b:0 src=dram:66880 shape=1,8,70 dst_strides=0,80,1 src_strides=0,70,1 pad=1,16,80 pad_value=0.0
    setf src=dma_in dst=matrix flag=0
    waitf src=dma_in dst=matrix flag=0
    mma dtype=f16 acc=l0c:0 a=l0a:12288 b=l0b:15360 m=64 n=80 k=96 accumulate=1 trans_b=0
    setf src=matrix dst=dma_in flag=0
    waitf src=matrix dst=dma_in flag=0
    dma dtype=f16 dst=l0a:12288 src=dram:25600 shape=1,36,96 dst_strides=0,96,1 src_strides=0,200,1 pad=1,48,96 pad_value=0.0
    dma dtype=f16 dst=l0b:15360 src=dram:40000 shape=1,96,70 dst_strides=0,80,1 src_strides=0,70,1 pad=1,96,80 pad_value=0.0
    setf src=dma_in dst=matrix flag=0
    waitf src=dma_in dst=matrix flag=0
    mma dtype=f16 acc=l0c:0 a=l0a:0 b=l0b:0 m=16 n=80 k=16 accumulate=1 trans_b=0
    setf src=matrix dst=dma_out flag=0
    mma dtype=f16 acc=l0c:5120 a=l0a:512 b=l0b:0 m=16 n=80 k=16 accumulate=1 trans_b=0
    setf src=matrix dst=dma_out flag=0
    mma dtype=f16 acc=l0c:10240 a=l0a:1024 b=l0b:0 m=16 n=80 k=16 accumulate=1 trans_b=0
    setf src=matrix dst=dma_out flag=0
    mma dtype=f16 acc=l0c:15360 a=l0a:1536 b=l0b:0 m=16 n=80 k=16 accumulate=1 trans_b=0
    setf src=matrix dst=dma_out flag=0
    setf src=matrix dst=dma_in flag=0
    waitf src=matrix dst=dma_out flag=0
    dma dtype=f32 dst=dram:68032 src=l0c:0 shape=1,16,70 dst_strides=0,70,1 src_strides=0,80,1 pad=1,16,70 pad_value=0.0
    waitf src=matrix dst=dma_out flag=0
    dma dtype=f32 dst=dram:72512 src=l0c:5120 shape=1,16,70 dst_strides=0,70,1 src_strides=0,80,1 pad=1,16,70 pad_value=0.0
    waitf src=matrix dst=dma_out flag=0
    dma dtype=f32 dst=dram:76992 src=l0c:10240 shape=1,16,70 dst_strides=0,70,1 src_strides=0,80,1 pad=1,16,70 pad_value=0.0
    waitf src=matrix dst=dma_out flag=0
    dma dtype=f32 dst=dram:81472 src=l0c:15360 shape=1,16,70 dst_strides=0,70,1 src_strides=0,80,1 pad=1,16,70 pad_value=0.0
    setf src=dma_out dst=matrix flag=0
    waitf src=matrix dst=dma_in flag=0
    dma dtype=f16 dst=l0a:0 src=dram:25792 shape=1,36,96 dst_strides=0,96,1 src_strides=0,200,1 pad=1,48,96 pad_value=0.0
    dma dtype=f16 dst=l0b:0 src=dram:53440 shape=1,96,70 dst_strides=0,80,1 src_strides=0,70,1 pad=1,96,80 pad_value=0.0
    setf src=dma_in dst=matrix flag=0
    waitf src=dma_in dst=matrix flag=0
    mma dtype=f16 acc=l0c:20480 a=l0a:12288 b=l0b:15360 m=48 n=80 k=96 accumulate=0 trans_b=0
    setf src=matrix dst=dma_in flag=0
    waitf src=matrix dst=dma_in flag=0
    dma dtype=f16 dst=l0a:12288 src=dram:25984 shape=1,36,8 dst_strides=0,16,1 src_strides=0,200,1 pad=1,48,16 pad_value=0.0
    dma dtype=f16 dst=l0b:15360 src=dram:66880 shape=1,8,70 dst_strides=0,80,1 src_strides=0,70,1 pad=1,16,80 pad_value=0.0
    setf src=dma_in dst=matrix flag=0
    waitf src=dma_in dst=matrix flag=0
    mma dtype=f16 acc=l0c:20480 a=l0a:0 b=l0b:0 m=48 n=80 k=96 accumulate=1 trans_b=0
    setf src=matrix dst=dma_in flag=0
    waitf src=dma_in dst=matrix flag=0
    mma dtype=f16 acc=l0c:20480 a=l0a:12288 b=l0b:15360 m=16 n=80 k=16 accumulate=1 trans_b=0
    setf src=matrix dst=dma_out flag=0
    mma dtype=f16 acc=l0c:25600 a=l0a:12800 b=l0b:15360 m=16 n=80 k=16 accumulate=1 trans_b=0
    setf src=matrix dst=dma_out flag=0
    mma dtype=f16 acc=l0c:30720 a=l0a:13312 b=l0b:15360 m=16 n=80 k=16 accumulate=1 trans_b=0
    setf src=matrix dst=dma_out flag=0
    setf src=matrix dst=dma_in flag=0
    waitf src=matrix dst=dma_out flag=0
    dma dtype=f32 dst=dram:85952 src=l0c:20480 shape=1,16,70 dst_strides=0,70,1 src_strides=0,80,1 pad=1,16,70 pad_value=0.0
    waitf src=matrix dst=dma_out flag=0
    dma dtype=f32 dst=dram:90432 src=l0c:25600 shape=1,16,70 dst_strides=0,70,1 src_strides=0,80,1 pad=1,16,70 pad_value=0.0
    waitf src=matrix dst=dma_out flag=0
    dma dtype=f32 dst=dram:94912 src=l0c:30720 shape=1,4,70 dst_strides=0,70,1 src_strides=0,80,1 pad=1,4,70 pad_value=0.0
    setf src=dma_out dst=matrix flag=0
    waitf src=matrix dst=dma_in flag=0
    waitf src=matrix dst=dma_in flag=0
    waitf src=dma_out dst=matrix flag=0
    waitf src=dma_out dst=matrix flag=0
    finish
